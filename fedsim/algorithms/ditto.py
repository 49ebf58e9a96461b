"""Ditto: Li, Hu, Beirami, Smith, 'Ditto: Fair and Robust Federated Learning Through
Personalization', ICML 2021 (Algorithm 1).

The global model trains by FedAvg. Each sampled client also trains its personal model ``v_k`` for the
same local schedule on ``F_k(v) + lambda/2 ||v - w||^2``, with ``w`` the global model it received; ``v_k``
(with its own BatchNorm statistics) persists on the client and is what it deploys. A client that was
never sampled has no personal model yet and deploys the current global model.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import norm_stats
from fedsim.algorithms.base import FederatedAlgorithm, dense_personal
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.models.base import Model, ModelVars


class Personal(NamedTuple):
    """A client's personal model and whether it has trained it (been sampled) yet."""

    model: ModelVars
    trained: jax.Array  # bool scalar


def ditto(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    lam: float = 0.1,
    reestimate_bn: bool = True,
    name: str = "ditto",
) -> FederatedAlgorithm:
    """FedAvg for the global model plus a proximal personal model per client (``lam`` = lambda); with
    ``reestimate_bn`` the deployed model's BatchNorm statistics are re-measured on the client's data."""
    base = fedavg(model, client_optimizer, server_optimizer, name=name)
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def client_update(server_state, personal: Personal, task, dataset):
        result = base.client_update(server_state, (), task, dataset)
        anchor = server_state.model.params

        def proximal(params, grads):
            return jax.tree.map(lambda g, v, w: g + lam * (v - w), grads, params, anchor)

        own = local_train(model, client_optimizer, personal.model, task, dataset, proximal)
        return result._replace(client_state=Personal(own.model, jnp.bool_(True)))

    return base._replace(
        client_init=untrained,
        client_update=client_update,
        personalize=deploy_personal(refresh),
    )


def untrained(model_vars: ModelVars) -> Personal:
    """A client's state before it is first sampled."""
    return Personal(model_vars, jnp.bool_(False))


def deploy_personal(refresh):
    """``personalize``: a client deploys its personal model once it has trained one, else the server
    model, with ``refresh`` (``norm_stats.reestimator``) applied to its BatchNorm statistics."""

    def personalize(server_state, personal: Personal, task, dataset):
        pick = lambda mine, server: jnp.where(personal.trained, mine, server)
        deployed = jax.tree.map(pick, personal.model, server_state.model)
        return dense_personal(refresh(deployed, task, dataset))

    return personalize


SPEC = AlgorithmSpec(
    "ditto",
    lambda hp, setup: ditto(
        setup.model, setup.optimizer, server_optimizer(hp), hp["lam"], setup.reestimate_bn
    ),
    hparams={
        "lam": 0.1,  # pull of each personal model towards the global one (paper's lambda)
        **SERVER_SGD,
    },
    traceable=("lam", "server_lr"),
    check=lambda hp: check_ranges(hp, "ditto", lam=">=0", server_lr=">0"),
)
