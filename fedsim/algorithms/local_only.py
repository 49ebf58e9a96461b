"""Local-only training, the no-federation personalisation baseline: each client trains its own model
from the shared initialisation on its own data and never communicates."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import norm_stats
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, dense_personal
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import AlgorithmSpec
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars  # the shared initialisation (what ``global_acc`` reports)


class Contribution(NamedTuple):
    """What a local-only client sends: nothing but a count (the server ignores it)."""

    clients: jax.Array  # float32 1


def local_only(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    reestimate_bn: bool = True,
    name: str = "local_only",
) -> FederatedAlgorithm:
    """Sampled clients train their own model for the round's local epochs; the server does nothing.
    With ``reestimate_bn`` a client deploys BatchNorm statistics re-measured on its data."""
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def client_update(server_state, own, task, dataset):
        result = local_train(model, client_optimizer, own, task, dataset)
        return ClientResult(
            contribution=Contribution(jnp.float32(1)),
            client_state=result.model,
            loss=result.loss,
            up_bytes=jnp.int32(0),
            down_bytes=jnp.int32(0),
        )

    def server_update(server_state, total):
        return server_state

    def personalize(server_state, own, task, dataset):
        return dense_personal(refresh(own, task, dataset))

    return FederatedAlgorithm(
        name, ServerState, lambda model_vars: model_vars, client_update, server_update, personalize
    )


SPEC = AlgorithmSpec(
    "local_only", lambda hp, setup: local_only(setup.model, setup.optimizer, setup.reestimate_bn)
)
