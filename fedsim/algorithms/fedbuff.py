"""FedBuff: Nguyen et al., AISTATS 2022, 'Federated Learning with Buffered Asynchronous Aggregation'.

``concurrency`` clients train at once, each from the server model that was current when it started;
the server buffers the updates as they arrive and, once it holds K (``clients_per_round``), steps
with their mean, each scaled by the staleness weight ``(1 + tau)^-staleness_exponent`` (the paper's
``1 / sqrt(1 + tau)``; ``tau``: server steps since the client's model was current).

One engine round is one buffer flush, simulated over the client axis without an event loop: the
server state holds every client's job (the server step it started from, the simulated time it ends)
and the last ``max_staleness + 1`` server models. Each round ``schedule`` frees the previous
arrivals, times out the jobs whose model has left that window, starts jobs on random idle clients
until ``concurrency`` train (each ends after the engine's ``durations``, ``fedsim.engine.faults``),
and hands the engine the K that end first; the clock moves to the last of them. Each arriving client
then trains from its own starting model, so what it sends equals what it would have sent then.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import fedavg as fedavg_lib
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Schedule, Update
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


class Jobs(NamedTuple):
    """Every client's job: the server step whose model it trains (-1: idle) and when it reports."""

    version: jax.Array  # int32 [C]
    finish: jax.Array  # float32 [C], inf when idle


class ServerState(NamedTuple):
    model: ModelVars  # w_t
    opt_state: optax.OptState
    recent: ModelVars  # w_{t - max_staleness} .. w_t stacked, w_v at row v % (max_staleness + 1)
    jobs: Jobs
    arrived: jax.Array  # int32 [K]: the clients of the current buffer
    step: jax.Array  # int32 t: server steps taken
    clock: jax.Array  # float32: simulated time of the latest arrival


def staleness_weight(staleness, exponent):
    """The paper's polynomial staleness weight ``(1 + tau)^-exponent`` (``exponent = 0.5``)."""
    return (1.0 + staleness) ** -exponent


def fedbuff(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    num_clients: int,
    buffer_size: int,
    concurrency: int,
    max_staleness: int,
    server_optimizer: optax.GradientTransformation | None = None,
    staleness_exponent=0.5,
) -> FederatedAlgorithm:
    """FedBuff with ``buffer_size`` (K) updates a server step and ``concurrency`` clients training.

    Each client sends ``(1 + tau)^-a (w_k - w_start)`` with weight 1; the server takes FedAvg's step
    on their mean with ``server_optimizer`` (default ``optax.sgd(1.0)``: ``w + mean``).
    Non-trainable model state (BatchNorm statistics) becomes the mean of the clients' own.

    >>> import optax
    >>> from fedsim.models import get_model
    >>> fedbuff(get_model("mlp", 10), optax.sgd(0.1), 100, 10, 20, 8).name
    'fedbuff'
    """
    server_optimizer = server_optimizer or optax.sgd(1.0)
    fedavg_step = fedavg_lib.fedavg(model, client_optimizer, server_optimizer).server_update
    window = max_staleness + 1

    def server_init(model_vars):
        recent = jax.tree.map(lambda leaf: jnp.stack([leaf] * window), model_vars)
        jobs = Jobs(
            jnp.full((num_clients,), -1, jnp.int32), jnp.full((num_clients,), jnp.inf, jnp.float32)
        )
        nobody = jnp.full((buffer_size,), num_clients, jnp.int32)
        opt_state = server_optimizer.init(model_vars.params)
        return ServerState(
            model_vars, opt_state, recent, jobs, nobody, jnp.int32(0), jnp.float32(0)
        )

    def client_init(model_vars):
        return ()

    def schedule(server_state, durations, key):
        step, clock = server_state.step, server_state.clock
        version = server_state.jobs.version.at[server_state.arrived].set(-1, mode="drop")
        version = jnp.where(version < step - max_staleness, -1, version)  # idle or timed out
        idle = version < 0
        wanted = concurrency - jnp.sum(~idle)
        draw = jnp.where(idle, jax.random.uniform(key, (num_clients,)), 2.0)
        starts = jnp.argsort(jnp.argsort(draw)) < wanted  # the idle with the lowest draws
        version = jnp.where(starts, step, version)
        finish = jnp.where(starts, clock + durations, server_state.jobs.finish)
        finish = jnp.where(version < 0, jnp.inf, finish)
        _, arrived = jax.lax.top_k(-finish, buffer_size)
        now = jnp.max(finish[arrived])
        state = server_state._replace(jobs=Jobs(version, finish), arrived=arrived, clock=now)
        return Schedule(state, arrived, now - clock)

    def client_update(server_state, client_state, task, dataset):
        started = server_state.jobs.version[task.client_id]
        received = jax.tree.map(lambda ring: ring[started % window], server_state.recent)
        result = local_train(model, client_optimizer, received, task, dataset)
        scale = staleness_weight(server_state.step - started, staleness_exponent)
        delta = jax.tree.map(
            lambda new, old: scale * (new - old), result.model.params, received.params
        )
        model_bytes = jnp.int32(dense_bytes(received))
        return ClientResult(
            contribution=Update(delta, jnp.float32(1), state=result.model.state),
            client_state=client_state,
            loss=result.loss,
            up_bytes=model_bytes,
            down_bytes=model_bytes,
        )

    def server_update(server_state, total):
        fedavg_state = fedavg_lib.ServerState(server_state.model, server_state.opt_state)
        model_vars, opt_state = fedavg_step(fedavg_state, total)
        step = server_state.step + 1
        recent = jax.tree.map(
            lambda ring, leaf: ring.at[step % window].set(leaf), server_state.recent, model_vars
        )
        return server_state._replace(
            model=model_vars, opt_state=opt_state, recent=recent, step=step
        )

    return FederatedAlgorithm(
        "fedbuff", server_init, client_init, client_update, server_update, schedule=schedule
    )


def build(hp, setup):
    """FedBuff from its section; ``concurrency=0`` is twice the buffer (at most every client)."""
    buffer_size, num_clients = setup.clients_per_round, setup.num_clients
    concurrency = hp["concurrency"] or min(2 * buffer_size, num_clients)
    if not buffer_size <= concurrency <= num_clients:
        raise ConfigError(
            f"fedbuff.concurrency={concurrency} must lie in [clients_per_round={buffer_size}, "
            f"num_clients={num_clients}]: the buffer fills from the clients training"
        )
    return fedbuff(
        setup.model, setup.optimizer, num_clients, buffer_size, concurrency,
        hp["max_staleness"], server_optimizer(hp), hp["staleness_exponent"],
    )  # fmt: skip


SPEC = AlgorithmSpec(
    "fedbuff",
    build,
    hparams={
        **SERVER_SGD,
        "concurrency": 0,  # clients training at once (Mc); 0 = 2 x clients_per_round (K, the buffer)
        "max_staleness": 20,  # jobs staler than this many server steps time out (models kept: +1)
        "staleness_exponent": 0.5,  # updates weigh (1 + staleness)^-exponent (0: unweighted)
    },
    traceable=("server_lr", "staleness_exponent"),
    check=lambda hp: check_ranges(
        hp,
        "fedbuff",
        server_lr=">0",
        concurrency=">=0",
        max_staleness=">=0",
        staleness_exponent=">=0",
    ),  # fmt: skip
)
