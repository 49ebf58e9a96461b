"""A config turned into an ``Experiment``: every checked input of a run, nothing compiled, nothing written.

``build_experiment(config)`` validates the config, assembles the federation (``fedsim.data``), builds
the model (a registered name or an import path), resolves the algorithm's ``AlgorithmSpec`` and its
section, the DP mechanism and the run settings. Any bad input raises ``ConfigError`` here, before a
driver writes anything. The result is a plain record; ``fedsim.engine.loop`` runs it.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim import algorithms, model_file, models, privacy
from fedsim import config as config_lib
from fedsim.algorithms import ClientSetup, Dataset, FederatedAlgorithm
from fedsim.algorithms.spec import client_optimizer, lr_schedule
from fedsim.algorithms.task import Federation
from fedsim.compress import lowrank
from fedsim.data import partition
from fedsim.data.assemble import federation_from_config
from fedsim.data.federated import FederatedData, hold_out_validation
from fedsim.data.sequence import with_next_token_targets
from fedsim.engine import faults, sharding
from fedsim.engine.programs import Programs, RunSettings, build_programs
from fedsim.engine.round import resolve_chunk_size
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars
from fedsim.models.initial import Truncation, check_ranks, check_start_model, initial_variables

REGISTRIES = {"partition": (*partition.PARTITIONERS, "natural")}


class Experiment(NamedTuple):
    """Everything one run needs, checked. ``values`` are its traceable hyper-parameters
    (``client_lr`` and ``<section>.<key>`` for the algorithm's ``traceable`` keys):
    ``make_algorithm(values)`` builds the (DP-wrapped) algorithm from them, traced or not."""

    config: Any  # the resolved ConfigDict (for the workdir and comparisons only)
    data: FederatedData
    model: Model
    make_algorithm: Callable[[dict], FederatedAlgorithm]
    values: dict
    settings: RunSettings
    privacy: privacy.Privacy | None
    start_model: ModelVars | None  # init_from's variables, or None for the seed's initialisation
    poisoned_clients: np.ndarray
    seed: int
    rounds: int
    eval_every: int
    eval_batch_size: int
    truncation: Truncation  # the factorised start model's ranks (init_* keys)


def check_config(config) -> None:
    """Every check of ``config`` that needs no data (``ConfigError`` on the first bad value)."""
    config_lib.validate(config, registries=REGISTRIES)
    privacy.validate(config)


def load_federation(config) -> FederatedData:
    """Validates ``config`` and builds its checked federation (no model, nothing compiled)."""
    check_config(config)
    return federation_from_config(config, config_lib.data_seed(config))


def build_experiment(config) -> Experiment:
    """The ``Experiment`` of ``config`` (reads its dataset and ``init_from``, writes nothing).
    Raises ``ConfigError`` on any bad input."""
    data = load_federation(config)
    data_seed = config_lib.data_seed(config)
    data, poisoned = faults.poison_clients(data, config.poison_fraction, data_seed)
    if config.attack == "label_flip":
        data = faults.flip_labels(data, attackers(config))
    data = hold_out_validation(data, config.val_fraction, data_seed)
    model = _model(config, data.num_classes)
    if model.sequence_targets:
        data = with_next_token_targets(data)
    start_model = model_file.load_model(config.init_from) if config.init_from else None
    if start_model is not None:
        describe = f"init_from={config.init_from!r} (model={config.model!r})"
        check_start_model(model, data.x_train[:1], start_model, describe)
    truncation = _truncation(config, model, data.x_train[:1])
    settings = _settings(config)
    dp = privacy.from_config(config, settings.clients_per_round)
    make_algorithm, values = _algorithm(config, model, dp, data)
    return Experiment(
        config, data, model, make_algorithm, values, settings, dp, start_model, poisoned,
        config.seed, config.rounds, config.eval_every, config.eval_batch_size, truncation,
    )  # fmt: skip


def _truncation(config, model: Model, sample_x) -> Truncation:
    """The checked ``Truncation`` of the ``init_*`` keys (``init_ranks_from``: a finished run's
    final kept ranks)."""
    ranks, key = tuple(config.init_ranks), "init_ranks"
    if config.init_ranks_from:
        state = model_file.load_model(config.init_ranks_from).state
        if lowrank.RANKS not in state:
            raise ConfigError(
                f"init_ranks_from={config.init_ranks_from!r} holds a dense model (no kept ranks)"
            )
        ranks, key = tuple(int(r) for r in lowrank.rank_vector(state)), "init_ranks_from"
    if ranks:
        check_ranks(model, sample_x, ranks, key)
    return Truncation(
        config.init_rank_allocation, config.init_params_budget, config.init_macs_budget, ranks
    )


def _model(config, num_classes: int) -> Model:
    try:
        return models.get_model(config.model, num_classes, **config.model_kwargs)
    except TypeError as err:
        raise ConfigError(
            f"model_kwargs={dict(config.model_kwargs)} for model={config.model!r}: {err}"
        ) from None


def _settings(config) -> RunSettings:
    clients_per_round = config_lib.clients_per_round(config)
    mesh = sharding.client_mesh(config.devices)
    devices = 1 if mesh is None else mesh.size
    chunk_size = resolve_chunk_size(
        config.chunk_size, -(-clients_per_round // devices), jax.default_backend()
    )
    return RunSettings(
        num_clients=config.num_clients,
        clients_per_round=clients_per_round,
        chunk_size=chunk_size,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        finetune_epochs=config.finetune_epochs,
        faults=_faults(config),
        sampling=config.client_sampling,
        mesh=mesh,
    )


def _faults(config) -> faults.Faults:
    return faults.Faults(
        config.dropout_prob,
        config.straggler_fraction,
        config.straggler_work,
        attack=config.attack,
        attackers=tuple(attackers(config).tolist()),
        attack_scale=config.attack_scale,
        attack_noise=config.attack_noise,
        latency_sigma=config.latency_sigma,
        latency_jitter=config.latency_jitter,
        straggler_slowdown=config.straggler_slowdown,
    )


def attackers(config) -> np.ndarray:
    """The malicious clients' ids: ``attack_fraction`` of them, fixed by the data seed (none
    without an ``attack``)."""
    fraction = 0.0 if config.attack == "none" else config.attack_fraction
    return faults.choose_clients(config.num_clients, fraction, config_lib.data_seed(config), 11)


def traceable_keys(config) -> tuple[str, ...]:
    """The config keys a grid may trace for ``config``'s algorithm: ``client_lr`` and
    ``<section>.<key>`` for each of the spec's ``traceable`` hyper-parameters."""
    spec = algorithms.get_spec(config.algorithm)
    return ("client_lr", *(f"{spec.name}.{key}" for key in spec.traceable))


def _algorithm(config, model: Model, dp, data: FederatedData) -> tuple[Callable, dict]:
    """``(make_algorithm, values)``: the algorithm as a function of its traceable values (checked
    now: a build-time error, e.g. an unsupported optimiser, or an algorithm DP cannot wrap)."""
    spec = algorithms.get_spec(config.algorithm)
    hparams = config_lib.algorithm_hparams(config, spec)
    own = lambda key: hparams[key.partition(".")[2]]
    values = {k: config.client_lr if k == "client_lr" else own(k) for k in traceable_keys(config)}

    def build(values: dict) -> FederatedAlgorithm:
        own = {key.partition(".")[2]: v for key, v in values.items() if "." in key}
        lr = values["client_lr"]
        scheduled = lr_schedule(config.client_lr_schedule, lr, total_local_steps(config, data))
        optimizer = client_optimizer(config.client_optimizer, scheduled, config.client_momentum)
        setup = ClientSetup(
            model, config.num_clients, config_lib.clients_per_round(config), optimizer,
            config.client_optimizer, lr, config.local_epochs, config.client_momentum,
            config.reestimate_bn, config.keep_client_optimizer_state,
        )  # fmt: skip
        return spec.build({**hparams, **own}, setup)

    algorithm = build(values)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), data.x_train[:1])
    jax.eval_shape(lambda v: (algorithm.server_init(v), algorithm.client_init(v)), abstract)
    if dp is not None:
        privacy.check_wrappable(algorithm, abstract, Dataset(data.x_train, data.y_train))
    if algorithm.schedule is not None and config.client_sampling != "fixed":
        raise ConfigError(
            f"client_sampling={config.client_sampling!r} with algorithm={config.algorithm!r}: it "
            "schedules its own clients; use client_sampling='fixed'"
        )
    return lambda values: privacy.wrap(build(values), dp, config.seed), values


def total_local_steps(config, data: FederatedData) -> int:
    """The local steps of the largest client over the whole run if it trains every round (the
    horizon of ``client_lr_schedule``; centrally: every step of the run)."""
    steps_per_epoch = -(-int(np.max(data.num_examples)) // config.batch_size)
    return config.rounds * config.local_epochs * steps_per_epoch


def programs(experiment: Experiment, values: dict | None = None) -> Programs:
    """The experiment's programs with its own ``values``, or with (traced) ``values``."""
    algorithm = experiment.make_algorithm(experiment.values if values is None else values)
    return build_programs(algorithm, experiment.model, experiment.settings)


def initial_model(experiment: Experiment) -> ModelVars:
    """The seed's initialisation, or ``init_from``'s model (see ``fedsim.models.initial``)."""
    e = experiment
    return initial_variables(e.model, e.data.x_train[:1], e.seed, e.start_model, e.truncation)


def init_states(experiment: Experiment, algorithm: FederatedAlgorithm):
    """``(server_state, client_states)`` from the seed; client state stacked ``[C, ...]``."""
    model_vars = initial_model(experiment)
    server_state = algorithm.server_init(model_vars)
    one = algorithm.client_init(model_vars)
    num_clients = experiment.settings.num_clients
    client_states = jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (num_clients,) + leaf.shape), one
    )
    return server_state, client_states


def federation(experiment: Experiment) -> Federation:
    """The device arrays a round reads."""
    d = experiment.data
    validation = () if d.num_val is None else (d.client_val_indices, d.num_val)
    return Federation(
        *map(jnp.asarray, (d.x_train, d.y_train, d.client_indices, d.num_examples, *validation))
    )


def run_keys(experiment: Experiment):
    """``(round_key, personal_eval_key, warmup_key)`` of the experiment's seed."""
    seed = jax.random.PRNGKey(experiment.seed)
    return tuple(jax.random.fold_in(seed, i) for i in (1, 2, 3))
