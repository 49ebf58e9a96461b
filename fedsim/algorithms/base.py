"""The algorithm interface: a NamedTuple of pure functions (after optax's GradientTransformation and
fedjax's FederatedAlgorithm). The engine vmaps ``client_update`` over clients, sums every client's
``contribution`` (weights already applied by the client) and hands the sum to ``server_update``; an
algorithm with ``stacked=True`` (robust aggregation) gets every slot's contribution instead, a ``Stacked``.
Algorithms that send model updates send an ``Update`` (what ``fedsim.privacy`` can clip and noise).
An asynchronous algorithm (FedBuff) picks each round's clients itself with ``schedule``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.compress.encode import dense_bytes

PyTree = Any


class Dataset(NamedTuple):
    """Pooled training arrays resident on the device; clients index into them."""

    x: jax.Array
    y: jax.Array


class ClientTask(NamedTuple):
    """One client's local work for one round (built by the engine, static shapes)."""

    batch_indices: jax.Array  # int32 [steps, B] into Dataset
    batch_mask: jax.Array  # bool [steps, B], False on padding
    num_examples: jax.Array  # int32 scalar
    key: jax.Array  # PRNG key for stochastic layers
    client_id: jax.Array  # int32 scalar, the client's row in the population
    val_indices: jax.Array  # int32 [V] held-out validation examples (V = 0 without validation)
    val_mask: jax.Array  # bool [V], False on padding
    examples: jax.Array  # int32 [N_max] the client's training examples, the first num_examples real


class ClientResult(NamedTuple):
    """What one client returns to the engine."""

    contribution: PyTree  # an Update or the algorithm's own NamedTuple; non-finite => excluded
    client_state: PyTree  # the client's new persistent state (written back if it succeeded)
    loss: jax.Array  # mean training loss over its real local steps
    up_bytes: jax.Array  # int32: encoded bytes it uploaded this round
    down_bytes: jax.Array  # int32: encoded bytes it downloaded this round


class Update(NamedTuple):
    """A client's weighted model update; the engine sums them leaf by leaf.

    ``coverage`` (mask-aware algorithms) is ``a m`` per coordinate; ``state`` is the ``a``-weighted
    non-trainable model state (BatchNorm statistics) or None when the algorithm sends none.
    """

    delta: PyTree  # a (W - W_server), zero where the client's mask is off
    weight: jax.Array  # float32 scalar a (n_k, or 1)
    coverage: PyTree | None = None
    state: PyTree | None = None


class Stacked(NamedTuple):
    """What ``server_update`` receives when the algorithm sets ``stacked=True``: the round's sampling
    slots' contributions stacked ``[S, ...]`` in slot order, zero where ``valid`` is False (padding,
    clients that were not sampled, dropped out or sent non-finite values)."""

    contributions: PyTree
    valid: jax.Array  # bool [S]


def mean_of(total: Update) -> tuple[PyTree, PyTree | None]:
    """``(mean delta, mean state)`` of a summed ``Update``: the delta over its coverage where given
    (``d / c`` where ``c > 0``; ``d``, i.e. 0, where nobody kept it), else over the weight; the state
    (None stays None) over the weight."""
    if total.coverage is None:
        delta = jax.tree.map(lambda d: d / total.weight, total.delta)
    else:
        delta = jax.tree.map(lambda d, c: d / jnp.where(c > 0, c, 1), total.delta, total.coverage)
    return delta, jax.tree.map(lambda s: s / total.weight, total.state)


class PersonalScores(NamedTuple):
    """Host numpy arrays over all C clients from the personal evaluation (``Personal`` per client)."""

    accuracy: np.ndarray  # float, each client's deployed model on its own test split
    model_bytes: np.ndarray  # int
    values_bytes: np.ndarray  # int
    density: np.ndarray  # float


class Personal(NamedTuple):
    """The model one client deploys, and what it costs to store."""

    model: PyTree  # ModelVars
    model_bytes: jax.Array  # int32, encoded (the byte rule of docs/metrics.md)
    values_bytes: jax.Array  # int32, 4 bytes per stored value (no index or bitmap overhead)
    density: jax.Array  # float32 fraction of prunable weights kept


def dense_personal(model_vars) -> Personal:
    """A client deploying a dense model: every parameter and statistic stored at 4 bytes."""
    size = jnp.int32(dense_bytes(model_vars))
    return Personal(model_vars, size, size, jnp.float32(1))


class Submodel(NamedTuple):
    """A model the server can hand out (e.g. one capacity tier's sub-model), and what it costs."""

    model: PyTree  # ModelVars, structured like the server model
    params: jax.Array  # int32 deployed parameter count
    model_bytes: jax.Array  # int32 bytes stored on a client
    round_bytes: jax.Array  # int32 bytes one client of this kind moves per round (down + up)
    macs: jax.Array  # int32 multiply-accumulates per example


class Schedule(NamedTuple):
    """An asynchronous algorithm's choice of a round's clients (``FederatedAlgorithm.schedule``)."""

    server_state: PyTree  # advanced to the round's arrivals (its clock, its in-flight jobs)
    client_ids: jax.Array  # int32 [K]: the clients whose updates the round aggregates, distinct
    sim_time: jax.Array  # float32: simulated time since the previous round's aggregation


class FederatedAlgorithm(NamedTuple):
    """Pure functions of one federated algorithm.

    server_init(model_vars) -> server_state, with a ``model`` field (ModelVars) used for evaluation.
    client_init(model_vars) -> one client's persistent state (the engine stacks it ``[C, ...]``).
    client_update(server_state, client_state, task, dataset) -> ClientResult.
    server_update(server_state, summed_contributions) -> server_state.
    stacked: when True, ``server_update`` receives a ``Stacked`` of every slot's contribution instead
    of their sum (for aggregators that need each update: median, trimmed mean, Krum); default False.
    personalize(server_state, client_state, task, dataset) -> Personal, for algorithms whose clients
    deploy their own model (None: every client deploys the server model).
    submodels(server_state, sample_x) -> {name: Submodel}, for algorithms that serve several models (Maestro's
    capacity tiers); each is scored on the pooled test set as ``acc_<name>``.
    warmup: a ``Warmup`` the engine runs once before round 1 (FedLTN's Jump-Start), or None.
    report(server_state, scores) -> {key: number}, algorithm-specific metrics added to every evaluation
    row, computed on the host; ``scores`` are the ``PersonalScores`` (None without ``personalize``).
    schedule(server_state, durations, key) -> Schedule, for asynchronous algorithms that choose the
    round's K clients themselves instead of the engine's uniform sampling; ``durations[c]`` is how
    long a job client ``c`` starts this round takes (``fedsim.engine.faults.job_durations``).
    """

    name: str
    server_init: Callable[..., PyTree]
    client_init: Callable[..., PyTree]
    client_update: Callable[..., ClientResult]
    server_update: Callable[..., PyTree]
    personalize: Callable[..., Personal] | None = None
    submodels: Callable[..., dict[str, Submodel]] | None = None
    warmup: "Warmup | None" = None
    report: Callable[[PyTree, PersonalScores | None], dict] | None = None
    stacked: bool = False
    schedule: Callable[..., Schedule] | None = None


class Warmup(NamedTuple):
    """A round run once before round 1 with every client taking part (FedLTN's Jump-Start).

    ``algorithm`` reads and writes the main algorithm's server and client states; each of its clients
    gets ``epochs`` times the configured local epochs in one task.
    """

    algorithm: FederatedAlgorithm
    epochs: int
