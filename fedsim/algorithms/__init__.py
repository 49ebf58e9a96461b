"""Federated algorithms, chosen by name from the config.

Each algorithm is a ``FederatedAlgorithm`` NamedTuple of pure functions built by a factory in its own
module, which also has a ``from_config(config, model, num_clients)``. Adding one is a new module plus
one entry in ``_FROM_CONFIG``; the engine does not change.
"""

from fedsim.algorithms import (
    ditto,
    fedavg,
    fedavg_ft,
    fedbn,
    fedltn,
    fedopt,
    fedprox,
    local_only,
    lotteryfl,
    maestro,
    scaffold,
    subfedavg,
)
from fedsim.algorithms.base import ClientResult, ClientTask, Dataset, FederatedAlgorithm
from fedsim.errors import ConfigError

_FROM_CONFIG = {
    "fedavg": fedavg.from_config,
    "fedprox": fedprox.from_config,
    "fedavgm": fedopt.fedavgm_from_config,
    "fedadam": fedopt.fedadam_from_config,
    "fedyogi": fedopt.fedyogi_from_config,
    "fedadagrad": fedopt.fedadagrad_from_config,
    "scaffold": scaffold.from_config,
    "fedavg_ft": fedavg_ft.from_config,
    "fedbn": fedbn.from_config,
    "ditto": ditto.from_config,
    "local_only": local_only.from_config,
    "lotteryfl": lotteryfl.from_config,
    "subfedavg": subfedavg.from_config,
    "fedltn": fedltn.from_config,
    "maestro": maestro.from_config,
}
ALGORITHMS = tuple(_FROM_CONFIG)


def get_algorithm(config, model, num_clients: int) -> FederatedAlgorithm:
    """Builds ``config.algorithm`` for ``model`` and a population of ``num_clients``."""
    if config.algorithm not in _FROM_CONFIG:
        raise ConfigError(
            f"algorithm={config.algorithm!r} is not registered; choose one of: {', '.join(ALGORITHMS)}"
        )
    return _FROM_CONFIG[config.algorithm](config, model, num_clients)


__all__ = [
    "ALGORITHMS",
    "ClientResult",
    "ClientTask",
    "Dataset",
    "FederatedAlgorithm",
    "get_algorithm",
]
