"""FedNova: Wang, Liu, Liang, Joshi, Poor, 'Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization', NeurIPS 2020 (official code: github.com/JYWa/FedNova).

Clients that run more local steps (more data, no straggling) pull FedAvg's average towards their own
objective. FedNova normalises: client i's change ``x_i - x`` is divided by ``||a_i||_1``, the summed
weights of its ``tau_i`` local gradients (``tau_i`` for SGD; with heavy-ball momentum ``rho``,
``(tau_i - rho (1 - rho^tau_i) / (1 - rho)) / (1 - rho)``), and the server moves by
``tau_eff = sum_i p_i ||a_i||_1`` times the ``p_i``-weighted mean of the normalised changes,
``p_i = n_i / n``: ``x <- x + tau_eff sum_i p_i (x_i - x) / ||a_i||_1`` (the paper's eq. 6 with its
default ``tau_eff``), through the server optimiser (plain SGD at 1 by default).

The message is an ``Update``: delta ``n_i (x_i - x) / ||a_i||_1``, weight ``n_i``, and as coverage the
scalar ``n_i ||a_i||_1``, so summed coverage over summed weight is ``tau_eff``. Under DP the
normalised change is what is clipped and noised; with ``dp_mask='client'`` the step counts are
released in the clear (like masks), with ``dp_mask='fixed'`` ``tau_eff`` is 1.
"""

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Update
from fedsim.algorithms.fedavg import ServerState
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


def normalizer(steps, momentum: float = 0.0):
    """``||a||_1`` of ``steps`` local steps of SGD with heavy-ball ``momentum`` (FedNova, sec. 4)."""
    steps = steps.astype(jnp.float32)
    if not momentum:
        return steps
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


def fednova(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    momentum: float = 0.0,
) -> FederatedAlgorithm:
    """FedNova with local ``optax.sgd`` (``momentum``: its heavy-ball coefficient, for ``||a||_1``).

    >>> from fedsim.models import get_model
    >>> fednova(get_model("mlp", 10), optax.sgd(0.1)).name
    'fednova'
    """
    server_optimizer = server_optimizer or optax.sgd(1.0)

    def server_init(model_vars):
        return ServerState(model_vars, server_optimizer.init(model_vars.params))

    def client_update(server_state, client_state, task, dataset):
        received = server_state.model
        result = local_train(model, client_optimizer, received, task, dataset)
        weight = task.num_examples.astype(jnp.float32)
        norm = jnp.maximum(normalizer(result.num_steps, momentum), 1.0)
        delta = jax.tree.map(
            lambda new, old: weight * (new - old) / norm, result.model.params, received.params
        )
        state = jax.tree.map(lambda s: weight * s, result.model.state)
        size = jnp.int32(dense_bytes(received))
        return ClientResult(
            Update(delta, weight, weight * norm, state), (), result.loss, size, size
        )

    def server_update(server_state, total: Update):
        tau_eff = total.coverage / total.weight
        pseudo_grad = jax.tree.map(lambda d: -tau_eff * d / total.weight, total.delta)
        params = server_state.model.params
        updates, opt_state = server_optimizer.update(pseudo_grad, server_state.opt_state, params)
        state = jax.tree.map(lambda s: s / total.weight, total.state)
        return ServerState(ModelVars(optax.apply_updates(params, updates), state), opt_state)

    return FederatedAlgorithm("fednova", server_init, lambda _: (), client_update, server_update)


def _build(hparams: dict, setup) -> FederatedAlgorithm:
    if setup.optimizer_name != "sgd":
        raise ConfigError(
            f"client_optimizer={setup.optimizer_name!r} with fednova: its normalisation is derived "
            "for local SGD (with optional momentum); use 'sgd'"
        )
    server = server_optimizer(hparams)
    return fednova(setup.model, setup.optimizer, server, setup.momentum)


SPEC = AlgorithmSpec(
    "fednova",
    _build,
    hparams=SERVER_SGD,
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "fednova", server_lr=">0"),
)
