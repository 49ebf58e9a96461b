"""Federated algorithms, chosen by name or by import path from the config.

Each algorithm is a ``FederatedAlgorithm`` NamedTuple of pure functions built by a factory in its own
module, which also declares an ``AlgorithmSpec`` (its config section and how to build it). The built-ins
are registered below as import paths, exactly like a user's ``algorithm='my_pkg.algos:SPEC'`` or
``algorithm='path/to/algos.py:SPEC'``; the engine does not change for either.
"""

from fedsim import plugins
from fedsim.algorithms.base import ClientResult, ClientTask, Dataset, FederatedAlgorithm
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup
from fedsim.errors import ConfigError

BUILTIN = {
    "fedavg": "fedsim.algorithms.fedavg:SPEC",
    "fedprox": "fedsim.algorithms.fedprox:SPEC",
    "fedavgm": "fedsim.algorithms.fedopt:FEDAVGM",
    "fedadam": "fedsim.algorithms.fedopt:FEDADAM",
    "fedyogi": "fedsim.algorithms.fedopt:FEDYOGI",
    "fedadagrad": "fedsim.algorithms.fedopt:FEDADAGRAD",
    "scaffold": "fedsim.algorithms.scaffold:SPEC",
    "fedavg_ft": "fedsim.algorithms.fedavg_ft:SPEC",
    "fedbn": "fedsim.algorithms.fedbn:SPEC",
    "ditto": "fedsim.algorithms.ditto:SPEC",
    "local_only": "fedsim.algorithms.local_only:SPEC",
    "lotteryfl": "fedsim.algorithms.lotteryfl:SPEC",
    "subfedavg": "fedsim.algorithms.subfedavg:SPEC",
    "fedltn": "fedsim.algorithms.fedltn:SPEC",
    "maestro": "fedsim.algorithms.maestro:SPEC",
    "fednova": "fedsim.algorithms.fednova:SPEC",
    "feddyn": "fedsim.algorithms.feddyn:SPEC",
    "moon": "fedsim.algorithms.moon:SPEC",
    "fedper": "fedsim.algorithms.fedper:SPEC",
    "fedrep": "fedsim.algorithms.fedrep:SPEC",
    "apfl": "fedsim.algorithms.apfl:SPEC",
    "pfedme": "fedsim.algorithms.pfedme:SPEC",
    "qffl": "fedsim.algorithms.qffl:SPEC",
    "fedbuff": "fedsim.algorithms.fedbuff:SPEC",
    "fedavg_topk": "fedsim.algorithms.compressed:TOPK",
    "fedavg_qsgd": "fedsim.algorithms.compressed:QSGD",
    "fedavg_sign": "fedsim.algorithms.compressed:SIGN",
    "fedavg_median": "fedsim.algorithms.robust:MEDIAN",
    "fedavg_trimmed": "fedsim.algorithms.robust:TRIMMED",
    "fedavg_krum": "fedsim.algorithms.robust:KRUM",
    "fedavg_normbound": "fedsim.algorithms.robust:NORMBOUND",
}
ALGORITHMS = tuple(BUILTIN)


def get_spec(name: str) -> AlgorithmSpec:
    """The ``AlgorithmSpec`` of a registered name or of an import path ``module:attr``."""
    if not plugins.is_path(name) and name not in BUILTIN:
        raise ConfigError(
            f"algorithm={name!r} is not registered; choose one of: {', '.join(ALGORITHMS)}, "
            "or give an import path 'module:attr' / 'file.py:attr' of an AlgorithmSpec"
        )
    spec = plugins.load(BUILTIN.get(name, name), "algorithm")
    if not isinstance(spec, AlgorithmSpec):
        raise ConfigError(
            f"algorithm={name!r} is a {type(spec).__name__}, not a fedsim.algorithms.AlgorithmSpec"
        )
    return spec


__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "ClientResult",
    "ClientSetup",
    "ClientTask",
    "Dataset",
    "FederatedAlgorithm",
    "get_spec",
]
