"""Experiment configs: ``ml_collections.ConfigDict`` with fedsim's shared keys plus one section per
algorithm.

Config files are Python: ``get_config(arg) -> ConfigDict`` built from ``base_config()`` and
``apply_arg(config, arg)``, where ``arg`` is the text after ``:`` in ``--config FILE.py:ARG``, a comma
list ``key=value`` (``smoke`` alone means ``smoke=True``; dotted keys reach into sections). Each
algorithm's own hyper-parameters live in its section, ``config.<name>`` (e.g. ``config.fedprox.mu``),
filled from its ``AlgorithmSpec.hparams``, so selecting an algorithm brings its defaults. ``validate``
checks every field before any work starts and raises ``ConfigError`` with one line naming the bad value.
"""

import ast
import copy
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict, config_dict

from fedsim import algorithms
from fedsim.algorithms.spec import LR_SCHEDULES, AlgorithmSpec
from fedsim.engine.faults import ATTACKS
from fedsim.errors import ConfigError, check_choices
from fedsim.models.initial import ALLOCATIONS


def base_config() -> ConfigDict:
    """Defaults shared by every experiment (FedAvg-paper cell E=5, B=10, SGD 0.01)."""
    c = ConfigDict()
    c.seed = 0  # initial model, client sampling and every other training draw
    c.data_seed = -1  # seed of the data (subset, partition, splits, poisoning); -1 = seed
    c.smoke = False  # set by a config ARG ``smoke``: a seconds-long run
    c.algorithm = "fedavg"  # a registered name or module:attr; config.<name> holds its keys
    c.model = "cnn"  # a registered name or an import path (a Flax module or make function)
    c.model_kwargs = ConfigDict()  # the model's arguments, e.g. {"factorized": True}
    c.dataset = (
        "mnist_subset"  # offline name, TFDS name, "npz" or an import path (seed -> ArrayDataset)
    )
    c.data_path = ""  # the .npz file for dataset='npz'
    c.data_dir = ""  # TFDS data directory for TFDS datasets (TFDS's default when empty)
    c.max_windows_per_client = 2000  # shakespeare: windows kept per client and split (0 = all)
    c.train_examples = 0  # use a seeded random subset of this many training examples (0 = all)
    c.partition = "dirichlet"  # iid, dirichlet, label_quantity, shards, quantity or natural
    c.alpha = 0.5  # dirichlet label skew
    c.labels_per_client = 2  # label_quantity ('#C=k')
    c.shards_per_client = 2  # shards
    c.beta = 0.5  # quantity skew
    c.feature_shift = False  # each client's images rotated/inverted/low-contrast by client (FedBN)
    c.feature_shift_transforms = "rotate,invert,contrast"  # the domains' transforms (comma list)
    c.min_client_size = 10  # dirichlet: redraw until every client has this many examples
    c.num_clients = 100  # the population
    c.clients_per_round = 10  # clients sampled each round (K)
    c.client_fraction = config_dict.placeholder(float)  # if set, K = fraction x num_clients
    c.rounds = 100  # communication rounds
    c.local_epochs = 5  # local epochs each sampled client trains (E)
    c.batch_size = 10  # local minibatch size (B)
    c.eval_every = 5  # rounds between evaluations (the last round is always evaluated)
    c.client_lr = 0.01  # client learning rate (traceable in a vmapped sweep)
    c.client_optimizer = "sgd"  # optax name of the client optimiser
    c.client_momentum = 0.0  # passed to the client optimiser as ``momentum`` when > 0
    c.client_lr_schedule = "constant"  # or 'step': x0.1 at 50 % and 75 % of the run's local steps
    c.keep_client_optimizer_state = False  # a client's optimiser state persists across rounds
    # shared by personalised methods (clients that validate, prune or fine-tune locally)
    c.val_fraction = 0.0  # share of each client's training data held out for local validation
    c.finetune_epochs = 1  # local epochs of a personal evaluation's task (fedavg_ft fine-tunes)
    c.reestimate_bn = (
        True  # personal/deployed BatchNorm statistics re-measured on own training data
    )
    c.init_from = ""  # start from a finished run's model.msgpack (SVD-factorised if factorized)
    c.init_params_budget = 0  # truncated SVD of init_from to this many deployed params (0 = full)
    c.init_macs_budget = 0  # truncated SVD of init_from to this many MACs per example (0 = full)
    c.init_rank_allocation = (
        "energy"  # its ranks: 'energy' (s^2 per param), 'macs' (s^2 per MAC; the
    )
    # init_macs_budget), 'uniform' (the same fraction of every layer: a strawman)
    c.init_ranks = ()  # fixed start ranks of the factorised layers (layer order; () = full/budget)
    c.init_ranks_from = ""  # a finished factorised run whose final ranks are init_ranks
    # client sampling (fedsim.engine.round) and user-level DP (fedsim.privacy; dp_clip=0: no DP)
    c.client_sampling = "fixed"  # 'fixed': K clients a round; 'poisson': each with q = K / N
    c.dp_clip = 0.0  # clip norm C of every client's update
    c.dp_noise = 1.0  # noise multiplier z (noise std z C on the sum of clipped updates)
    c.dp_target_epsilon = 0.0  # > 0: compute z so that the whole run costs this epsilon
    c.dp_delta = 1e-5  # delta of the (epsilon, delta) guarantee
    c.dp_accountant = "rdp"  # 'rdp' or 'pld' (dp-accounting)
    c.dp_mask = "client"  # sparse updates: 'client' coverage (reveals masks) or 'fixed' denominator
    c.dp_target_quantile = 0.0  # > 0: adaptive clipping to this quantile of update norms
    c.dp_clip_lr = 0.2  # adaptive clipping's geometric step
    c.dp_count_noise = 0.0  # adaptive clipping: noise std on the unclipped count (0 = K / 20)
    c.chunk_size = 0  # clients per vmapped chunk; 0 = per platform (1 on CPU)
    c.devices = 1  # devices the round's clients are sharded over (0 = all; fedsim.engine.sharding)
    c.eval_batch_size = 500  # batch size of evaluation passes
    c.checkpoint_every = 0  # rounds between checkpoints; 0 = at every evaluation
    c.keep_checkpoints = 1  # newest checkpoints kept; 0 = delete them when the run finishes
    # simulated faults (fedsim.engine.faults)
    c.dropout_prob = 0.0  # each sampled client drops out with this probability
    c.straggler_fraction = 0.0  # a fixed share of clients that straggle
    c.straggler_work = 0.5  # share of its local steps a straggler finishes
    c.straggler_slowdown = 1.0  # a straggler's local steps take this many times as long
    c.latency_sigma = 0.0  # log-sd of clients' typical job durations (sim_time), fixed per client
    c.latency_jitter = 0.0  # log-sd of each job's duration around its client's typical one
    c.poison_fraction = 0.0  # a fixed share of clients whose features are NaN
    c.attack = "none"  # attackers: 'sign_flip', 'scale', 'noise' (their uploads) or 'label_flip'
    c.attack_fraction = 0.0  # a fixed share of clients that attack
    c.attack_scale = 1.0  # s: sign_flip sends -s delta, scale sends s delta
    c.attack_noise = 1.0  # sigma: noise sends N(0, sigma^2) per coordinate
    for name in algorithms.ALGORITHMS:  # each algorithm's own hyper-parameters, as it declares them
        c[name] = _section(algorithms.get_spec(name))
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
    """``'a=1,b=x,smoke'`` -> ``{'a': 1, 'b': 'x', 'smoke': True}`` (values as Python literals; commas
    inside brackets or quotes belong to the value, so ``budgets=(1.0,0.5)`` is one item)."""
    out = {}
    for item in filter(None, _top_level_items(arg or "")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        out[key] = literal(raw) if sep else True
    return out


def _top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]


def apply_arg(config: ConfigDict, arg: str | dict | None, smoke=None) -> ConfigDict:
    """Applies ``ARG`` overrides (text, or a dict of values); ``smoke(config)`` shrinks the run first
    when ``smoke`` is set. Dotted keys (``fedprox.mu``) set a key of a section."""
    values = arg if isinstance(arg, dict) else parse_arg(arg)
    if values.get("smoke") and smoke is not None:
        smoke(config)
    for key, value in values.items():
        set_value(config, key, value, what="config ARG key")
    return config


def set_value(config: ConfigDict, key: str, value, what: str = "config key") -> None:
    """``config[key] = value`` for a dotted ``key``, widening ints to floats; one-line errors."""
    *sections, leaf = key.split(".")
    node = config
    for name in sections:
        node = node.get(name) if isinstance(node, ConfigDict) else None
    if not isinstance(node, ConfigDict) or leaf not in node:
        raise ConfigError(f"{what} {key!r} is unknown{suggest_keys(config, key)}")
    current = node[leaf]
    if isinstance(value, bool) and current is not None and not isinstance(current, bool):
        raise ConfigError(
            f"{key}={value!r}: {key} takes a {type(current).__name__} (a bare ARG key means True; "
            f"write {key}=VALUE)"
        )
    try:
        node[leaf] = type(current)(value) if _widen(current, value) else value
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}={value!r}: {err}") from None


def flat_items(config) -> dict:
    """``config`` as ``{dotted key: value}``: sections spelled ``section.key``, ``model_kwargs`` (the
    model's open-ended arguments) as one value."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ConfigDict) and key != "model_kwargs":
            out.update({f"{key}.{k}": v for k, v in flat_items(value).items()})
        else:
            out[key] = value.to_dict() if isinstance(value, ConfigDict) else value
    return out


def suggest_keys(config: ConfigDict, key: str) -> str:
    """``'; did you mean ...?'`` naming the closest keys (a key moved into a section is found by its
    last part, e.g. ``prox_mu`` -> ``fedprox.mu``), or a pointer to ``fedsim keys``."""
    import difflib

    known = list(flat_items(config))
    leaf = key.split(".")[-1]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    close += [k for k in known if k.split(".")[-1] in (leaf, leaf.split("_")[-1]) and "." in k]
    selected = f"{config.get('algorithm')}."
    close = sorted(dict.fromkeys(close), key=lambda k: not k.startswith(selected))[:4]
    if close:
        return f"; did you mean {' or '.join(close)}? (every key: fedsim keys)"
    return "; every key with its default: fedsim keys"


def literal(text: str):
    """``text`` as a Python literal (``'0.1'`` -> 0.1, ``'(8,)'`` -> (8,)), else the text itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def with_overrides(config: ConfigDict, values: dict) -> ConfigDict:
    """A locked copy of ``config`` with ``values`` set (dotted keys reach into sections)."""
    cell = copy.deepcopy(config)
    cell.unlock()
    for key, value in values.items():
        set_value(cell, key, value, what="sweep key")
    return cell.lock()


def _widen(current, value) -> bool:
    return isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)


def clients_per_round(config) -> int:
    """The number of clients sampled each round (``client_fraction`` wins when set)."""
    if config.client_fraction is not None:
        return max(int(config.client_fraction * config.num_clients), 1)
    return config.clients_per_round


def data_seed(config) -> int:
    """The seed that draws the federation: ``data_seed``, or ``seed`` when that is -1.

    Fixing ``data_seed`` while ``seed`` varies keeps one partition for every training seed (what lets
    ``fedsim sweep`` train those seeds as one vmapped grid).
    """
    return config.seed if config.data_seed == -1 else config.data_seed


POSITIVE = (
    "num_clients",
    "rounds",
    "local_epochs",
    "batch_size",
    "eval_every",
    "eval_batch_size",
    "labels_per_client",
    "shards_per_client",
)
NON_NEGATIVE = (
    "chunk_size",
    "devices",
    "min_client_size",
    "checkpoint_every",
    "keep_checkpoints",
    "max_windows_per_client",
    "finetune_epochs",
    "train_examples",
    "init_params_budget",
    "init_macs_budget",
    "latency_sigma",
    "latency_jitter",
)
FRACTIONS = {  # key: (lowest, highest, whether the highest is allowed)
    "dropout_prob": (0, 1, False),
    "val_fraction": (0, 1, False),
    "client_momentum": (0, 1, False),
    "straggler_fraction": (0, 1, True),
    "poison_fraction": (0, 1, True),
    "attack_fraction": (0, 1, True),
}


def validate(config, *, registries: dict[str, tuple[str, ...]]) -> None:
    """Checks every field that does not need the data; raises ``ConfigError`` on the first bad one.

    ``registries`` maps ``dataset``/``partition`` to the accepted names; the algorithm's own section
    is checked by its ``AlgorithmSpec``.
    """
    for key, names in registries.items():
        if config[key] not in names:
            raise ConfigError(
                f"{key}={config[key]!r} is not registered; choose one of: {', '.join(names)}"
            )
    _check_numbers(config)
    _check_clients(config)
    check_choices(
        config,
        {
            "init_rank_allocation": ALLOCATIONS,
            "attack": ATTACKS,
            "client_lr_schedule": LR_SCHEDULES,
        },
    )
    _check_truncation(config)
    check_algorithm(config, algorithms.get_spec(config.algorithm))


def _check_truncation(config) -> None:
    """Each rank allocation reads one budget; fixed ranks take none; budgets cut init_from's SVD."""
    budget = "init_macs_budget" if config.init_rank_allocation == "macs" else "init_params_budget"
    other = ({"init_params_budget", "init_macs_budget"} - {budget}).pop()
    if config[other]:
        raise ConfigError(
            f"{other}={config[other]} with init_rank_allocation="
            f"{config.init_rank_allocation!r}, which cuts to {budget}"
        )
    if config[budget] and not config.init_from:
        raise ConfigError(f"{budget}={config[budget]} needs init_from (it truncates its SVD)")
    fixed = [k for k in ("init_ranks", "init_ranks_from") if config[k]]
    if fixed and (len(fixed) > 1 or config[budget]):
        raise ConfigError(f"{fixed[0]} fixes the ranks: drop {(fixed + [budget])[1]}")


def _check_numbers(config) -> None:
    for key in POSITIVE:
        if config[key] < 1:
            raise ConfigError(f"{key}={config[key]} must be a positive integer")
    if config.seed < 0:
        raise ConfigError(f"seed={config.seed} must be >= 0")
    if config.data_seed < -1:
        raise ConfigError(f"data_seed={config.data_seed} must be >= 0, or -1 for seed")
    for key in ("alpha", "beta", "client_lr", "attack_scale", "attack_noise"):
        if not config[key] > 0:
            raise ConfigError(f"{key}={config[key]} must be > 0")
    for key in NON_NEGATIVE:
        if config[key] < 0:
            raise ConfigError(f"{key}={config[key]} must be >= 0")
    for key, (low, high, closed) in FRACTIONS.items():
        if not (low <= config[key] <= high if closed else low <= config[key] < high):
            raise ConfigError(
                f"{key}={config[key]} must lie in [{low}, {high}{']' if closed else ')'}"
            )
    if not 0 < config.straggler_work <= 1:
        raise ConfigError(f"straggler_work={config.straggler_work} must lie in (0, 1]")
    if not config.straggler_slowdown >= 1:
        raise ConfigError(f"straggler_slowdown={config.straggler_slowdown} must be >= 1")


def _check_clients(config) -> None:
    if config.client_fraction is not None:
        if not 0 < config.client_fraction <= 1:
            raise ConfigError(f"client_fraction={config.client_fraction} must lie in (0, 1]")
    elif not 1 <= config.clients_per_round <= config.num_clients:
        raise ConfigError(
            f"clients_per_round={config.clients_per_round} must lie in [1, num_clients="
            f"{config.num_clients}]"
        )


def algorithm_hparams(config, spec: AlgorithmSpec) -> dict:
    """The algorithm's section as a dict: ``config.<spec.name>``, or its defaults when absent."""
    if spec.name not in config:
        return dict(spec.hparams)
    section = config[spec.name]
    if not isinstance(section, ConfigDict):
        raise ConfigError(f"{spec.name}={section!r}: the algorithm's section must be a ConfigDict")
    values = section.to_dict()
    unknown = sorted(set(values) - set(spec.hparams))
    if unknown:
        raise ConfigError(
            f"{spec.name}.{unknown[0]} is not a hyper-parameter of algorithm {spec.name!r}; it has: "
            f"{', '.join(spec.hparams) or 'none'}"
        )
    return {**spec.hparams, **values}


def check_algorithm(config, spec: AlgorithmSpec) -> None:
    """The algorithm's own section (its ``check``) and what it needs from the shared keys."""
    hparams = algorithm_hparams(config, spec)
    if spec.check is not None:
        spec.check(hparams)
    factorized = bool(config.model_kwargs.get("factorized", False))
    if factorized != spec.factorized:
        raise ConfigError(
            f"model_kwargs.factorized={factorized} with algorithm={config.algorithm!r}: "
            f"it trains {'factorised (factorized=True)' if spec.factorized else 'dense'} models"
        )
    if config.keep_client_optimizer_state and not spec.keeps_optimizer_state:
        raise ConfigError(
            f"keep_client_optimizer_state=True with algorithm={config.algorithm!r}: its clients "
            "cannot keep an optimiser state (fedavg and maestro can)"
        )
    if config.client_lr_schedule == "step" and not (
        config.keep_client_optimizer_state and clients_per_round(config) == config.num_clients
    ):
        raise ConfigError(
            "client_lr_schedule='step' counts a client's own steps: it needs "
            "keep_client_optimizer_state=True and every client in every round"
        )
    if spec.needs_validation and not config.val_fraction:
        raise ConfigError(
            f"val_fraction=0 with algorithm={config.algorithm!r}: it prunes on each client's "
            "held-out validation split; set val_fraction in (0, 1), e.g. 0.1"
        )


def select_algorithm(config: ConfigDict, name: str) -> ConfigDict:
    """Sets ``config.algorithm = name`` (a registered name or an import path) and adds its section
    ``config.<spec.name>`` with the spec's defaults when the config lacks it (an unlocked config), so
    its keys can be overridden like a built-in's (``--config.<spec.name>.KEY=...``)."""
    spec = algorithms.get_spec(name)
    config.algorithm = name
    if spec.name not in config:
        config[spec.name] = _section(spec)
    return config


def with_algorithm_section(config) -> ConfigDict:
    """``config`` with the selected algorithm's section present (a plug-in's defaults filled in), so
    the saved ``config.json`` holds every hyper-parameter the run used."""
    spec = algorithms.get_spec(config.algorithm)
    if spec.name in config:
        return config
    if spec.name in base_config():
        raise ConfigError(
            f"algorithm {config.algorithm!r} is named {spec.name!r}, a shared config key"
        )
    filled = copy.deepcopy(config)
    filled.unlock()
    return select_algorithm(filled, config.algorithm).lock()


def _section(spec: AlgorithmSpec) -> ConfigDict:
    """An algorithm's config section: its declared hyper-parameters at their defaults."""
    return ConfigDict(dict(spec.hparams))


def sweep_cells(path: str) -> list[dict]:
    """The override dicts of ``get_sweep()`` in config file ``path`` (``fedsim sweep``)."""
    module = config_module(path)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"config file {path!r} has no get_sweep(); fedsim sweep needs one")
    return [dict(cell) for cell in module.get_sweep()]
