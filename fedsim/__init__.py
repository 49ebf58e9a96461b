"""fedsim: a JAX/Flax functional federated-learning simulator.

Clients are a leading array axis (vmapped in chunks), algorithms are NamedTuples of pure functions,
and one jitted function runs a whole round. ``fedsim.run(config, workdir)`` is what ``fedsim run``
calls; ``fedsim.records(build_experiment(config))`` runs the same rounds without touching files.
"""

from fedsim.algorithms.base import ClientResult, ClientTask, Dataset, FederatedAlgorithm
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.fedopt import fedadagrad, fedadam, fedavgm, fedopt_transform, fedyogi
from fedsim.algorithms.fedprox import fedprox
from fedsim.algorithms.scaffold import scaffold
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup
from fedsim.algorithms.task import Federation
from fedsim.config import load_config
from fedsim.driver import run
from fedsim.engine.loop import run as records
from fedsim.engine.round import build_round_fn
from fedsim.engine.setup import Experiment, build_experiment
from fedsim.errors import ConfigError

__all__ = [
    "AlgorithmSpec",
    "ClientResult",
    "ClientSetup",
    "ClientTask",
    "ConfigError",
    "Dataset",
    "Experiment",
    "FederatedAlgorithm",
    "Federation",
    "build_experiment",
    "build_round_fn",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedopt_transform",
    "fedprox",
    "fedyogi",
    "load_config",
    "records",
    "run",
    "scaffold",
]
