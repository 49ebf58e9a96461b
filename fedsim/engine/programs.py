"""An experiment's pure programs: the round, the personal evaluation and the warm-up round.

``build_programs(algorithm, model, settings)`` takes a built algorithm, the model and a small typed
``RunSettings`` (never a config), so a single run jits the programs and a grid vmaps them over cells
whose algorithms differ only in traced hyper-parameters.
"""

from collections.abc import Callable
from typing import NamedTuple

from jax.sharding import Mesh

from fedsim.algorithms import FederatedAlgorithm
from fedsim.engine import faults as faults_lib
from fedsim.engine.round import build_round_fn
from fedsim.metrics import evaluate
from fedsim.models.base import Model


class RunSettings(NamedTuple):
    """How the rounds run: population, participation, local work, chunking and devices."""

    num_clients: int
    clients_per_round: int
    chunk_size: int
    local_epochs: int
    batch_size: int
    finetune_epochs: int  # local epochs of the task a personal evaluation hands each client
    faults: faults_lib.Faults = faults_lib.NO_FAULTS
    sampling: str = "fixed"
    mesh: Mesh | None = None


class Programs(NamedTuple):
    """An experiment's pure functions: jit them for one run, vmap them for a grid of runs."""

    algorithm: FederatedAlgorithm
    round_fn: Callable  # fedsim.engine.round.build_round_fn
    personal_eval: Callable | None  # fedsim.metrics.evaluate.build_personal_eval
    warmup_fn: Callable | None  # the algorithm's Warmup round (all clients), once before round 1


def warmup_epochs(algorithm: FederatedAlgorithm, settings: RunSettings) -> int:
    """Local epochs each client runs in ``algorithm``'s warm-up round."""
    return settings.local_epochs * algorithm.warmup.epochs


def build_programs(algorithm: FederatedAlgorithm, model: Model, settings: RunSettings) -> Programs:
    """The round, the personal evaluation (algorithms whose clients deploy their own model) and the
    warm-up round (algorithms with a ``Warmup``) of ``algorithm``."""
    s = settings
    round_fn = build_round_fn(
        algorithm,
        num_clients=s.num_clients,
        clients_per_round=s.clients_per_round,
        chunk_size=s.chunk_size,
        local_epochs=s.local_epochs,
        batch_size=s.batch_size,
        faults=s.faults,
        sampling=s.sampling,
        mesh=s.mesh,
    )
    personal_eval = None
    if algorithm.personalize is not None:
        personal_eval = evaluate.build_personal_eval(
            model,
            algorithm.personalize,
            epochs=s.finetune_epochs,
            batch_size=s.batch_size,
            chunk=s.chunk_size,
        )
    warmup_fn = None
    if algorithm.warmup is not None:
        warmup_fn = build_round_fn(
            algorithm.warmup.algorithm,
            num_clients=s.num_clients,
            clients_per_round=s.num_clients,
            chunk_size=s.chunk_size,
            local_epochs=warmup_epochs(algorithm, s),
            batch_size=s.batch_size,
            mesh=s.mesh,
        )
    return Programs(algorithm, round_fn, personal_eval, warmup_fn)
