"""FedAvg + fine-tuning (e.g. Wang et al. 2019, 'Federated Evaluation of On-device Personalization'):
FedAvg training; at evaluation every client fine-tunes the server model on its own training data for
``finetune_epochs`` local epochs (config key) and deploys the result."""

import optax

from fedsim.algorithms import norm_stats
from fedsim.algorithms.base import FederatedAlgorithm, dense_personal
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.models.base import Model


def fedavg_ft(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    reestimate_bn: bool = True,
    name: str = "fedavg_ft",
) -> FederatedAlgorithm:
    """FedAvg whose clients deploy a locally fine-tuned copy of the server model (its BatchNorm
    statistics re-measured on their data with ``reestimate_bn``)."""
    base = fedavg(model, client_optimizer, server_optimizer, name=name)
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def personalize(server_state, client_state, task, dataset):
        tuned = local_train(model, client_optimizer, server_state.model, task, dataset)
        return dense_personal(refresh(tuned.model, task, dataset))

    return base._replace(personalize=personalize)


SPEC = AlgorithmSpec(
    "fedavg_ft",
    lambda hp, setup: fedavg_ft(
        setup.model, setup.optimizer, server_optimizer(hp), setup.reestimate_bn
    ),
    hparams=SERVER_SGD,
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "fedavg_ft", server_lr=">0"),
)
