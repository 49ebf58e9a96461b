"""Experiment configs: ``ml_collections.ConfigDict`` with the standard keys of CONTRACT.md.

Config files are Python: ``get_config(arg) -> ConfigDict`` built from ``base_config()`` and
``apply_arg(config, arg)``, where ``arg`` is the text after ``:`` in ``--config FILE.py:ARG``, a comma
list ``key=value`` (``smoke`` alone means ``smoke=True``). ``validate`` checks every field before any
work starts and raises ``ConfigError`` with one line naming the bad value.
"""

import ast
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict, config_dict

from fedsim.errors import ConfigError


def base_config() -> ConfigDict:
    """Defaults shared by every experiment (FedAvg-paper cell E=5, B=10, SGD 0.01)."""
    c = ConfigDict()
    c.seed = 0
    c.data_seed = -1  # seed of the data (subset, partition, splits, poisoning); -1 = seed
    c.smoke = False
    c.algorithm = "fedavg"
    c.model = "cnn"
    c.model_kwargs = ConfigDict()
    c.dataset = "mnist_subset"
    c.data_path = ""  # the .npz file for dataset='npz'
    c.data_dir = ""  # TFDS data directory for TFDS datasets (TFDS's default when empty)
    c.max_windows_per_client = 2000  # shakespeare: windows kept per client and split (0 = all)
    c.train_examples = 0  # use a seeded random subset of this many training examples (0 = all)
    c.partition = "dirichlet"
    c.alpha = 0.5  # dirichlet label skew
    c.labels_per_client = 2  # label_quantity ('#C=k')
    c.shards_per_client = 2  # shards
    c.beta = 0.5  # quantity skew
    c.min_client_size = 10
    c.num_clients = 100
    c.clients_per_round = 10
    c.client_fraction = config_dict.placeholder(float)
    c.rounds = 100
    c.local_epochs = 5
    c.batch_size = 10
    c.eval_every = 5
    c.client_lr = 0.01
    c.client_optimizer = "sgd"
    c.client_momentum = 0.0  # passed to the client optimiser as ``momentum`` when > 0
    c.server_lr = 1.0
    c.server_optimizer = "sgd"
    c.server_momentum = 0.9
    c.server_beta1 = 0.9
    c.server_beta2 = 0.99
    c.server_tau = 1e-3
    c.prox_mu = 0.01
    # personalisation and pruning (FedLTN family, fedsim.algorithms.fedltn and its baselines)
    c.val_fraction = 0.0  # share of each client's training data held out for local validation
    c.finetune_epochs = 1  # fedavg_ft: local epochs of fine-tuning before a client is evaluated
    c.ditto_lambda = 0.1
    c.target_density = 0.1
    c.prune_rate = 0.2
    c.prune_threshold = 0.5
    c.prune_scope = "layer"
    c.aggregation_weights = "uniform"  # masked aggregation weights a_k: 'uniform' or 'examples'
    c.density_budgets = ()  # fedltn lean start: per-client density tiers, e.g. (1.0, 0.5, 0.25)
    c.jump_start_rounds = 0  # fedltn Jump-Start: local-only virtual rounds before round 1 (spec: 3)
    c.subfedavg_dist_thresh = 1e-4  # Sub-FedAvg: mask change needed to accept a pruning step
    # Maestro (fedsim.algorithms.maestro; needs model_kwargs.factorized=True)
    c.lambda_gl = 1e-6  # hierarchical group lasso strength
    c.epsilon_ps = 1e-5  # progressive shrinking: slots with importance below this are cut
    c.weight_decay = 1e-4  # coupled weight decay on the client's own slots
    c.shrink_every = 1  # rounds between shrinking steps (0 = never)
    c.ordered_dropout = True  # per-layer rank sampling; False trains every kept slot
    c.recalibrate_bn = True  # re-estimate BatchNorm statistics of the full model after training
    c.init_from = ""  # start from a finished run's model.msgpack (SVD-factorised if factorized)
    c.init_params_budget = 0  # truncated SVD of init_from to this many deployed params (0 = full)
    c.rank_tiers = (1.0,)  # FjORD capacity tiers: client k trains ceil(p r) slots, p = tiers[k % T]
    # client sampling (fedsim.engine.round) and user-level DP (fedsim.privacy; dp_clip=0: no DP)
    c.client_sampling = "fixed"  # 'fixed': K clients a round; 'poisson': each with q = K / N
    c.dp_clip = 0.0  # clip norm C of every client's update
    c.dp_noise = 1.0  # noise multiplier z (noise std z C on the sum of clipped updates)
    c.dp_target_epsilon = 0.0  # > 0: compute z so that the whole run costs this epsilon
    c.dp_delta = 1e-5
    c.dp_accountant = "rdp"  # 'rdp' or 'pld' (dp-accounting)
    c.dp_mask = "client"  # sparse updates: 'client' coverage (reveals masks) or 'fixed' denominator
    c.dp_target_quantile = 0.0  # > 0: adaptive clipping to this quantile of update norms
    c.dp_clip_lr = 0.2  # adaptive clipping's geometric step
    c.dp_count_noise = 0.0  # adaptive clipping: noise std on the unclipped count (0 = K / 20)
    c.chunk_size = 0
    c.devices = 1  # devices the round's clients are sharded over (0 = all; fedsim.engine.sharding)
    c.eval_batch_size = 500
    c.checkpoint_every = 0  # rounds between checkpoints; 0 = at every evaluation
    # simulated faults (fedsim.engine.faults)
    c.dropout_prob = 0.0
    c.straggler_fraction = 0.0
    c.straggler_work = 0.5
    c.poison_fraction = 0.0
    return c


def config_module(path):
    """The Python module of config file ``path`` (its get_config, get_sweep and constants)."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ConfigDict:
    """``'configs/NAME.py[:ARG]'`` -> ``get_config(ARG)``, as ``--config`` loads it (for notebooks)."""
    path, _, arg = spec.partition(":")
    return config_module(path).get_config(arg or None)


def parse_arg(arg: str | None) -> dict:
    """``'a=1,b=x,smoke'`` -> ``{'a': 1, 'b': 'x', 'smoke': True}`` (values as Python literals)."""
    out = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            out[key] = True
            continue
        try:
            out[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key] = raw.strip()
    return out


def apply_arg(config: ConfigDict, arg: str | None, smoke=None) -> ConfigDict:
    """Applies ``ARG`` overrides; ``smoke(config)`` shrinks the run first when ``smoke`` is set."""
    values = parse_arg(arg)
    if values.get("smoke") and smoke is not None:
        smoke(config)
    for key, value in values.items():
        if key not in config:
            raise ConfigError(f"config ARG key {key!r} is unknown; known keys: {', '.join(config)}")
        try:
            config[key] = type(config[key])(value) if _widen(config[key], value) else value
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config ARG {key}={value!r}: {err}") from None
    return config


def _widen(current, value) -> bool:
    return isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)


def clients_per_round(config) -> int:
    """The number of clients sampled each round (``client_fraction`` wins when set)."""
    if config.client_fraction is not None:
        return max(int(config.client_fraction * config.num_clients), 1)
    return config.clients_per_round


def check_choices(config, choices: dict[str, tuple[str, ...]]) -> None:
    """Raises ConfigError unless every ``config[key]`` is one of ``choices[key]``."""
    for key, accepted in choices.items():
        if config[key] not in accepted:
            raise ConfigError(f"{key}={config[key]!r}; choose one of: {', '.join(accepted)}")


def data_seed(config) -> int:
    """The seed that draws the federation: ``data_seed``, or ``seed`` when that is -1.

    Fixing ``data_seed`` while ``seed`` varies keeps one partition for every training seed (what lets
    ``fedsim sweep`` train those seeds as one vmapped grid).
    """
    return config.seed if config.data_seed == -1 else config.data_seed


def validate(config, *, registries: dict[str, tuple[str, ...]]) -> None:
    """Checks every field that does not need the data; raises ``ConfigError`` on the first bad one.

    ``registries`` maps ``algorithm``/``model``/``dataset``/``partition`` to the accepted names.
    """
    for key, names in registries.items():
        if config[key] not in names:
            raise ConfigError(
                f"{key}={config[key]!r} is not registered; choose one of: {', '.join(names)}"
            )
    positive_ints = (
        "num_clients",
        "rounds",
        "local_epochs",
        "batch_size",
        "eval_every",
        "eval_batch_size",
        "labels_per_client",
        "shards_per_client",
    )
    for key in positive_ints:
        if config[key] < 1:
            raise ConfigError(f"{key}={config[key]} must be a positive integer")
    if config.seed < 0:
        raise ConfigError(f"seed={config.seed} must be >= 0")
    if config.data_seed < -1:
        raise ConfigError(f"data_seed={config.data_seed} must be >= 0, or -1 for seed")
    for key in ("alpha", "beta", "client_lr", "server_lr", "server_tau"):
        if not config[key] > 0:
            raise ConfigError(f"{key}={config[key]} must be > 0")
    for key in (
        "chunk_size",
        "devices",
        "min_client_size",
        "prox_mu",
        "checkpoint_every",
        "max_windows_per_client",
        "finetune_epochs",
        "ditto_lambda",
        "train_examples",
        "lambda_gl",
        "epsilon_ps",
        "weight_decay",
        "shrink_every",
        "init_params_budget",
        "jump_start_rounds",
    ):
        if config[key] < 0:
            raise ConfigError(f"{key}={config[key]} must be >= 0")
    if config.client_fraction is not None:
        if not 0 < config.client_fraction <= 1:
            raise ConfigError(f"client_fraction={config.client_fraction} must lie in (0, 1]")
    elif not 1 <= config.clients_per_round <= config.num_clients:
        raise ConfigError(
            f"clients_per_round={config.clients_per_round} must lie in [1, num_clients="
            f"{config.num_clients}]"
        )
    for key in (
        "server_momentum",
        "server_beta1",
        "server_beta2",
        "dropout_prob",
        "val_fraction",
        "client_momentum",
    ):
        if not 0 <= config[key] < 1:
            raise ConfigError(f"{key}={config[key]} must lie in [0, 1)")
    for key in ("straggler_fraction", "poison_fraction", "prune_threshold", "prune_rate"):
        if not 0 <= config[key] <= 1:
            raise ConfigError(f"{key}={config[key]} must lie in [0, 1]")
    check_choices(
        config, {"prune_scope": ("layer", "global"), "aggregation_weights": ("uniform", "examples")}
    )
    if not all(0 < b <= 1 for b in config.density_budgets):
        raise ConfigError(
            f"density_budgets={tuple(config.density_budgets)}: each must lie in (0, 1]"
        )
    if not config.rank_tiers or not all(0 < p <= 1 for p in config.rank_tiers):
        raise ConfigError(
            f"rank_tiers={tuple(config.rank_tiers)}: give one or more fractions in (0, 1]"
        )
    factorized = bool(config.model_kwargs.get("factorized", False))
    if factorized != (config.algorithm == "maestro"):
        raise ConfigError(
            f"model_kwargs.factorized={factorized} with algorithm={config.algorithm!r}: "
            "algorithm 'maestro' trains factorised models (factorized=True), every other one dense"
        )
    if config.jump_start_rounds and config.algorithm != "fedltn":
        raise ConfigError(
            f"jump_start_rounds={config.jump_start_rounds} with algorithm={config.algorithm!r}: "
            "Jump-Start belongs to algorithm 'fedltn' (use 0 for any other)"
        )
    if not 0 < config.target_density <= 1:
        raise ConfigError(f"target_density={config.target_density} must lie in (0, 1]")
    if not 0 < config.straggler_work <= 1:
        raise ConfigError(f"straggler_work={config.straggler_work} must lie in (0, 1]")


def sweep_cells(path: str) -> list[dict]:
    """The override dicts of ``get_sweep()`` in config file ``path`` (``fedsim sweep``)."""
    module = config_module(path)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"config file {path!r} has no get_sweep(); fedsim sweep needs one")
    return [dict(cell) for cell in module.get_sweep()]
