"""Ditto: Li, Hu, Beirami, Smith, 'Ditto: Fair and Robust Federated Learning Through
Personalization', ICML 2021 (Algorithm 1).

The global model trains by FedAvg. Each sampled client also trains its personal model ``v_k`` for the
same local schedule on ``F_k(v) + lambda/2 ||v - w||^2``, with ``w`` the global model it received; ``v_k``
(with its own BatchNorm statistics) persists on the client and is what it deploys.
"""

import jax
import optax

from fedsim.algorithms.base import FederatedAlgorithm, dense_personal
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.models.base import Model


def ditto(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    lam: float = 0.1,
    name: str = "ditto",
) -> FederatedAlgorithm:
    """FedAvg for the global model plus a proximal personal model per client (``lam`` = lambda)."""
    base = fedavg(model, client_optimizer, server_optimizer, name=name)

    def client_update(server_state, personal, task, dataset):
        result = base.client_update(server_state, (), task, dataset)
        anchor = server_state.model.params

        def proximal(params, grads):
            return jax.tree.map(lambda g, v, w: g + lam * (v - w), grads, params, anchor)

        own = local_train(model, client_optimizer, personal, task, dataset, proximal)
        return result._replace(client_state=own.model)

    def personalize(server_state, personal, task, dataset):
        return dense_personal(personal)

    return base._replace(
        client_init=lambda model_vars: model_vars,
        client_update=client_update,
        personalize=personalize,
    )


SPEC = AlgorithmSpec(
    "ditto",
    lambda hp, setup: ditto(setup.model, setup.optimizer, server_optimizer(hp), lam=hp["lam"]),
    hparams={
        "lam": 0.1,  # pull of each personal model towards the global one (paper's lambda)
        **SERVER_SGD,
    },
    traceable=("lam", "server_lr"),
    check=lambda hp: check_ranges(hp, "ditto", lam=">=0", server_lr=">0"),
)
