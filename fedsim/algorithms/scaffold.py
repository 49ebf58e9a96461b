"""SCAFFOLD: Karimireddy et al., ICML 2020, 'SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning' (option II control-variate update).

Client k keeps a control variate ``c_k`` between rounds (stacked ``[C, ...]`` by the engine); local steps
use ``g - c_k + c``; after its ``K_k`` real steps ``c_k+ = c_k - c + (w - y) / (K_k lr)``. The server
averages ``y - w`` uniformly over the sampled clients and moves ``c`` by ``sum(dc) / population``.
Traffic is twice FedAvg's in each direction (model and control variate).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup, check_ranges
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars
    control: optax.Params


class Contribution(NamedTuple):
    """One client's SCAFFOLD message (unweighted): model and control-variate deltas."""

    model: optax.Params  # y - w
    state: optax.Params  # the client's non-trainable model state after training
    control: optax.Params  # c_k+ - c_k
    count: jax.Array  # float32 1, so the sum counts the clients


def scaffold(
    model: Model, client_lr: float, num_clients: int, server_lr: float = 1.0
) -> FederatedAlgorithm:
    """SCAFFOLD with plain local SGD at ``client_lr`` (so the control-variate identity holds).

    >>> from fedsim.models import get_model
    >>> scaffold(get_model("mlp", 10), client_lr=0.1, num_clients=100).name
    'scaffold'
    """
    client_optimizer = optax.sgd(client_lr)
    zeros_like = lambda params: jax.tree.map(jnp.zeros_like, params)

    def server_init(model_vars):
        return ServerState(model_vars, zeros_like(model_vars.params))

    def client_init(model_vars):
        return zeros_like(model_vars.params)

    def client_update(server_state, client_control, task, dataset):
        received, control = server_state.model, server_state.control

        def adjust(params, grads):
            return jax.tree.map(lambda g, ck, c: g - ck + c, grads, client_control, control)

        result = local_train(model, client_optimizer, received, task, dataset, adjust)
        scale = 1.0 / (jnp.maximum(result.num_steps, 1) * client_lr)
        new_control = jax.tree.map(
            lambda ck, c, w, y: ck - c + scale * (w - y),
            client_control,
            control,
            received.params,
            result.model.params,
        )
        model_delta = jax.tree.map(jnp.subtract, result.model.params, received.params)
        control_delta = jax.tree.map(jnp.subtract, new_control, client_control)
        message_bytes = jnp.int32(dense_bytes(received) + dense_bytes(control))
        return ClientResult(
            contribution=Contribution(
                model_delta, result.model.state, control_delta, jnp.float32(1.0)
            ),
            client_state=new_control,
            loss=result.loss,
            up_bytes=message_bytes,
            down_bytes=message_bytes,
        )

    def server_update(server_state, total):
        mean = lambda leaf: leaf / total.count
        params = jax.tree.map(
            lambda w, d: w + server_lr * mean(d), server_state.model.params, total.model
        )
        state = jax.tree.map(mean, total.state)
        control = jax.tree.map(
            lambda c, d: c + d / num_clients, server_state.control, total.control
        )
        return ServerState(ModelVars(params, state), control)

    return FederatedAlgorithm("scaffold", server_init, client_init, client_update, server_update)


def _build(hparams: dict, setup: ClientSetup) -> FederatedAlgorithm:
    if setup.optimizer_name != "sgd":
        raise ConfigError(
            f"client_optimizer={setup.optimizer_name!r} is not supported by scaffold; use 'sgd'"
        )
    return scaffold(setup.model, setup.lr, setup.num_clients, hparams["server_lr"])


SPEC = AlgorithmSpec(
    "scaffold",
    _build,
    hparams={
        "server_lr": 1.0,  # the global step size (the paper's eta_g)
    },
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "scaffold", server_lr=">0"),
)
