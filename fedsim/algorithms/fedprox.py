"""FedProx: Li et al., MLSys 2020, 'Federated Optimization in Heterogeneous Networks'.

FedAvg whose clients minimise ``F_k(w') + mu/2 ||w' - w||^2``: each local gradient gains
``mu (w' - w)`` with ``w`` the received server model. Fixed local work (no straggler model).
"""

from fedsim.algorithms import fedavg as fedavg_lib
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.models.base import Model


def fedprox(model: Model, client_optimizer, mu: float = 0.01, server_optimizer=None):
    """FedProx with proximal strength ``mu`` (the paper tunes it over {0.001, 0.01, 0.1, 1}).

    >>> import optax
    >>> from fedsim.models import get_model
    >>> fedprox(get_model("mlp", 10), optax.sgd(0.1), mu=0.1).name
    'fedprox'
    """
    return fedavg_lib.fedavg(model, client_optimizer, server_optimizer, mu, name="fedprox")


SPEC = AlgorithmSpec(
    "fedprox",
    lambda hp, setup: fedprox(setup.model, setup.optimizer, hp["mu"], server_optimizer(hp)),
    hparams={
        "mu": 0.01,  # proximal strength: mu (w - w_server) joins every local gradient (paper: 0.001-1)
        **SERVER_SGD,
    },
    traceable=("mu", "server_lr"),
    check=lambda hp: check_ranges(hp, "fedprox", mu=">=0", server_lr=">0"),
)
