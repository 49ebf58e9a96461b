"""FedAvg: McMahan et al. 2017, 'Communication-Efficient Learning of Deep Networks from Decentralized
Data', with the server step written as an optax optimiser on the pseudo-gradient ``-mean(delta)``
(Reddi et al. 2021), so FedAvgM/FedAdam/... differ only in that optimiser."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, ClientTask, FederatedAlgorithm, Update, mean_of
from fedsim.algorithms.local import LocalResult, local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars
    opt_state: optax.OptState


def client_message(
    result: LocalResult, received: ModelVars, task: ClientTask, client_state
) -> ClientResult:
    """What a FedAvg client sends after training ``received`` into ``result.model``:
    ``Update(n_k (w_k - w), n_k, state=n_k s_k)``, the dense model's bytes each way."""
    weight = task.num_examples.astype(jnp.float32)
    delta = jax.tree.map(
        lambda new, old: weight * (new - old), result.model.params, received.params
    )
    state = jax.tree.map(lambda s: weight * s, result.model.state)
    model_bytes = jnp.int32(dense_bytes(received))
    return ClientResult(
        contribution=Update(delta, weight, state=state),
        client_state=client_state,
        loss=result.loss,
        up_bytes=model_bytes,
        down_bytes=model_bytes,
    )


def fedavg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    proximal_mu: float | None = None,
    weight_decay: float = 0.0,
    keep_optimizer_state: bool = False,
    name: str = "fedavg",
) -> FederatedAlgorithm:
    """Federated averaging weighted by client examples.

    Every sampled client trains from the server model; the server averages the deltas weighted by
    ``n_k`` and applies ``server_optimizer`` (default ``optax.sgd(1.0)``: plain averaging) to
    ``-mean(delta)``. Non-trainable model state (BatchNorm statistics) is averaged the same way.
    A ``proximal_mu`` (a float or a traced array; 0 is a no-op) adds FedProx's ``mu (w - w_server)``
    to every local gradient, a ``weight_decay`` the coupled decay ``weight_decay w``.
    ``keep_optimizer_state`` makes each client's optimiser state (momentum, schedule step) its
    persistent client state, so a client trains on across rounds as in one central run.

    >>> import optax
    >>> from fedsim.models import get_model
    >>> algorithm = fedavg(get_model("mlp", 10), optax.sgd(0.1))
    >>> algorithm.name
    'fedavg'
    """
    server_optimizer = server_optimizer or optax.sgd(1.0)

    def server_init(model_vars):
        return ServerState(model_vars, server_optimizer.init(model_vars.params))

    def client_init(model_vars):
        return client_optimizer.init(model_vars.params) if keep_optimizer_state else ()

    def client_update(server_state, client_state, task, dataset):
        received = server_state.model
        adjust = None
        if proximal_mu is not None or weight_decay:

            def adjust(params, grads):
                if proximal_mu is not None:
                    grads = jax.tree.map(
                        lambda g, p, w: g + proximal_mu * (p - w), grads, params, received.params
                    )
                if weight_decay:
                    grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
                return grads

        kept = client_state if keep_optimizer_state else None
        result = local_train(
            model, client_optimizer, received, task, dataset, adjust, opt_state=kept
        )
        new_state = result.opt_state if keep_optimizer_state else client_state
        return client_message(result, received, task, new_state)

    def server_update(server_state, total):
        delta, state = mean_of(total)
        pseudo_grad = jax.tree.map(jnp.negative, delta)
        params = server_state.model.params
        updates, opt_state = server_optimizer.update(pseudo_grad, server_state.opt_state, params)
        model_vars = ModelVars(optax.apply_updates(params, updates), state)
        return ServerState(model_vars, opt_state)

    return FederatedAlgorithm(name, server_init, client_init, client_update, server_update)


SPEC = AlgorithmSpec(
    "fedavg",
    lambda hp, setup: fedavg(
        setup.model,
        setup.optimizer,
        server_optimizer(hp),
        weight_decay=hp["weight_decay"],
        keep_optimizer_state=setup.keep_optimizer_state,
    ),  # fmt: skip
    hparams={**SERVER_SGD, "weight_decay": 0.0},  # coupled weight decay on the client's gradient
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "fedavg", server_lr=">0", weight_decay=">=0"),
    keeps_optimizer_state=True,
)
