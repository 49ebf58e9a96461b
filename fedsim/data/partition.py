"""Seeded partitioners that split a training set's labels across clients.

A partitioner is a pure function ``(labels, num_clients, rng, *, hparams) -> list[np.ndarray]`` that
returns one int64 array of indices into ``labels`` per client; ``PARTITIONERS`` registers it by name
and ``partition`` validates the inputs and dispatches. The procedures follow NIID-Bench (Li et al.,
ICDE 2022, 'Federated Learning on Non-IID Data Silos: An Experimental Study').
"""

import inspect
from collections.abc import Callable

import numpy as np

from fedsim.errors import ConfigError

_MAX_DIRICHLET_PASSES = 1000


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Permutes all indices and splits them into ``num_clients`` near-equal parts."""
    order = rng.permutation(len(labels)).astype(np.int64)
    return np.array_split(order, num_clients)


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Label skew: each class is spread over clients by ``Dir(alpha)`` proportions.

    NIID-Bench ``noniid-labeldir`` (Li et al., ICDE 2022, 'Federated Learning on Non-IID Data Silos:
    An Experimental Study'). In one pass, for each class: shuffle its indices, draw
    ``p ~ Dir(alpha * 1_K)``, zero ``p_k`` for clients already holding ``>= N/K`` examples,
    renormalise, and cut the class at ``floor(cumsum(p) * |class|)[:-1]``. Passes repeat until every
    client holds at least ``min(min_size, N // K)`` examples; then each client's indices are
    shuffled. A pass whose open clients all drew ``p_k = 0`` (possible for tiny ``alpha``) also
    counts as failed.

    Raises:
      ConfigError: ``alpha <= 0``, or no pass succeeded within 1,000 tries.
    """
    if not alpha > 0:
        raise ConfigError(f"alpha={alpha} must be > 0")
    labels = np.asarray(labels)
    n = len(labels)
    required = min(min_size, n // num_clients)
    classes = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    for _ in range(_MAX_DIRICHLET_PASSES):
        owners = _dirichlet_pass(classes, n, num_clients, alpha, rng)
        if owners is not None and np.bincount(owners, minlength=num_clients).min() >= required:
            return _group_shuffled(np.concatenate(classes), owners, num_clients, rng)
        classes = [rng.permutation(members) for members in classes]
    raise ConfigError(
        f"dirichlet partition found no split giving every client >= {required} examples in "
        f"{_MAX_DIRICHLET_PASSES} passes (alpha={alpha}, num_clients={num_clients}, "
        f"min_size={min_size}); raise alpha or lower num_clients or min_size"
    )


def _dirichlet_pass(
    classes: list[np.ndarray],
    n: int,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """One NIID-Bench pass: the owning client of each index in ``concatenate(classes)``."""
    sizes = np.zeros(num_clients, dtype=np.int64)
    owners = []
    for members in classes:
        p = rng.dirichlet(np.full(num_clients, alpha))
        p[sizes >= n / num_clients] = 0.0
        if p.sum() == 0.0:
            return None
        cuts = (np.cumsum(p / p.sum()) * len(members)).astype(np.int64)[:-1]
        counts = np.diff(cuts, prepend=0, append=len(members))
        sizes += counts
        owners.append(np.repeat(np.arange(num_clients), counts))
    return np.concatenate(owners)


def _group_shuffled(
    indices: np.ndarray, owners: np.ndarray, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Groups ``indices`` by owner, each client's list in random order."""
    order = np.lexsort((rng.random(len(indices)), owners))
    counts = np.bincount(owners, minlength=num_clients)
    return np.split(indices[order].astype(np.int64), np.cumsum(counts)[:-1])


Partitioner = Callable[..., list[np.ndarray]]

PARTITIONERS: dict[str, Partitioner] = {
    "iid": iid,
    "dirichlet": dirichlet,
}


def partition(
    name: str,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    dataset_name: str | None = None,
    **hparams,
) -> list[np.ndarray]:
    """Splits ``labels`` across ``num_clients`` clients with the registered partitioner ``name``.

    Hyper-parameters that the partitioner does not take are ignored, so one config can carry
    ``alpha`` whatever the partition. ``dataset_name`` only improves error messages.

    >>> rng = np.random.default_rng(0)
    >>> parts = partition("dirichlet", np.arange(1000) % 10, 20, rng, alpha=0.5)
    >>> sum(len(p) for p in parts)
    1000

    Raises:
      ConfigError: unknown ``name``, ``num_clients`` outside ``[1, len(labels)]``, or a bad
        hyper-parameter (e.g. ``alpha <= 0``).
    """
    if name not in PARTITIONERS:
        raise ConfigError(
            f"partition={name!r} is not registered; choose one of: {', '.join(PARTITIONERS)}"
        )
    labels = np.asarray(labels)
    of_dataset = f" of dataset {dataset_name}" if dataset_name else ""
    if num_clients < 1:
        raise ConfigError(f"num_clients={num_clients} must be >= 1")
    if num_clients > len(labels):
        raise ConfigError(
            f"num_clients={num_clients} exceeds the {len(labels)} training examples{of_dataset}"
        )
    fn = PARTITIONERS[name]
    accepted = inspect.signature(fn).parameters
    return fn(labels, num_clients, rng, **{k: v for k, v in hparams.items() if k in accepted})
