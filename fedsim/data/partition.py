"""Seeded partitioners that split a training set's labels across clients.

A partitioner is a pure function ``(labels, num_clients, rng, *, hparams) -> list[np.ndarray]`` that
returns one int64 array of indices into ``labels`` per client; ``PARTITIONERS`` registers it by name
and ``partition`` validates the inputs and dispatches. The five partitioners:

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet`` (``alpha``): label skew, NIID-Bench ``noniid-labeldir``.
- ``shards`` (``shards_per_client``): label skew by sorted shards, McMahan et al. 2017
  ('Communication-Efficient Learning of Deep Networks from Decentralized Data', AISTATS); drops the
  ``N mod (K * shards_per_client)`` examples left over after the last whole shard.
- ``label_quantity`` (``labels_per_client``): '#C=k' label skew, NIID-Bench ``noniid-#label{k}``;
  drops (with a warning) the examples of labels no client holds.
- ``quantity`` (``beta``): IID labels with Dirichlet-skewed client sizes, NIID-Bench
  ``iid-diff-quantity``.

The NIID-Bench procedures follow Li et al., ICDE 2022, 'Federated Learning on Non-IID Data Silos: An
Experimental Study' (repository ``Xtra-Computing/NIID-Bench``).
"""

import inspect
import numbers
import warnings
from collections.abc import Callable

import numpy as np

from fedsim.errors import ConfigError

_MAX_DIRICHLET_PASSES = 1000
_MAX_QUANTITY_DRAWS = 1000


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


def shards(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Label skew by shards (McMahan et al. 2017): each client gets ``s`` label-sorted shards.

    Stable-sorts the indices by label, cuts the first ``K * s * m`` of them into ``K * s`` shards of
    ``m = floor(N / (K * s))`` consecutive indices, and gives each client ``s`` shards drawn without
    replacement (client ``i`` gets shards ``perm[i*s:(i+1)*s]`` of one random permutation, in that
    order). The remainder, the last ``N - K * s * m`` indices of the sorted order (so examples of
    the largest labels), is dropped. Every client holds exactly ``s * m`` examples. A shard can
    straddle a label boundary, so a client holds at most ``s`` distinct labels only when every
    class size is a multiple of ``m``; a client can also end up with a single label.

    Raises:
      ConfigError: ``shards_per_client`` is not an integer ``>= 1``, or ``K * s > N`` (empty shards).
    """
    s = shards_per_client
    if not _is_int(s) or s < 1:
        raise ConfigError(f"shards_per_client={s} must be an integer >= 1")
    labels = np.asarray(labels)
    n, num_shards = len(labels), num_clients * int(s)
    shard_size = n // num_shards
    if shard_size == 0:
        raise ConfigError(
            f"shards_per_client={s} with num_clients={num_clients} needs at least "
            f"{num_shards} examples (one per shard), got {n}; lower shards_per_client or num_clients"
        )
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    cut = by_label[: num_shards * shard_size].reshape(num_shards, shard_size)
    drawn = rng.permutation(num_shards).reshape(num_clients, int(s))
    return [cut[row].reshape(-1) for row in drawn]


def label_quantity(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    labels_per_client: int = 2,
    num_classes: int | None = None,
) -> list[np.ndarray]:
    """Label skew '#C=k': each client holds ``k`` labels (NIID-Bench ``noniid-#label{k}``).

    Client ``i``'s label set starts as ``{i mod L}`` and gains uniformly random distinct labels
    until it has ``k``; then each label's shuffled indices are ``array_split`` equally among the
    clients holding it, in client order. ``L`` is ``num_classes`` if given, else
    ``labels.max() + 1``. With ``k = L`` every class is split over all clients; with ``K >= L``
    every label is held. Otherwise the examples of labels no client holds are dropped with a
    ``UserWarning`` (NIID-Bench crashes there). A client receives 0 examples of a held label that
    has fewer examples than holders, so it holds at most ``k`` distinct labels, exactly ``k`` when
    every class has at least ``K`` examples.

    Raises:
      ConfigError: ``labels_per_client`` outside ``[1, L]``, ``num_classes`` below
        ``labels.max() + 1``, or a negative label.
    """
    labels = np.asarray(labels)
    num_labels = _num_labels(labels, num_classes)
    k = labels_per_client
    if not _is_int(k):
        raise ConfigError(
            f"labels_per_client={k} must be an integer in [1, {num_labels}] (the number of labels)"
        )
    if not 1 <= k <= num_labels:
        raise ConfigError(
            f"labels_per_client={k} must lie in [1, {num_labels}] (the number of labels)"
        )
    holders: list[list[int]] = [[] for _ in range(num_labels)]
    for client in range(num_clients):
        first = client % num_labels
        others = np.delete(np.arange(num_labels), first)
        for label in [first, *rng.choice(others, size=int(k) - 1, replace=False)]:
            holders[label].append(client)
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label, owners in enumerate(holders):
        if owners:
            members = rng.permutation(np.flatnonzero(labels == label)).astype(np.int64)
            for client, chunk in zip(owners, np.array_split(members, len(owners)), strict=True):
                pieces[client].append(chunk)
    unheld = [c for c, owners in enumerate(holders) if not owners and np.any(labels == c)]
    if unheld:
        dropped = int(np.isin(labels, unheld).sum())
        warnings.warn(
            f"label_quantity: no client holds labels {unheld}; dropping their {dropped} examples "
            f"(labels_per_client={k}, num_clients={num_clients}); raise either to keep them",
            stacklevel=2,
        )
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]


def quantity(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    beta: float = 0.5,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Quantity skew: IID labels, client sizes in ``Dir(beta)`` proportions.

    NIID-Bench ``iid-diff-quantity``: permute all indices, draw ``q ~ Dir(beta * 1_K)`` until
    ``min_k q_k * N >= min(min_size, N // K)`` (and the integer sizes reach it too), and cut the
    permutation at ``floor(cumsum(q) * N)[:-1]``. Smaller ``beta`` means more skewed sizes.

    Raises:
      ConfigError: ``beta`` not finite and ``> 0``, ``min_size < 0``, or no draw succeeded within
        1,000 tries.
    """
    if not (beta > 0 and np.isfinite(beta)):
        raise ConfigError(f"beta={beta} must be a finite number > 0")
    if min_size < 0:
        raise ConfigError(f"min_size={min_size} must be >= 0")
    n = len(labels)
    required = min(min_size, n // num_clients)
    order = rng.permutation(n).astype(np.int64)
    for _ in range(_MAX_QUANTITY_DRAWS):
        q = rng.dirichlet(np.full(num_clients, float(beta)))
        if not q.sum() > 0:
            continue
        q = q / q.sum()
        cuts = (np.cumsum(q) * n).astype(np.int64)[:-1]
        sizes = np.diff(cuts, prepend=0, append=n)
        if (q * n).min() >= required and sizes.min() >= required:
            return np.split(order, cuts)
    raise ConfigError(
        f"quantity partition drew no sizes giving every client >= {required} examples in "
        f"{_MAX_QUANTITY_DRAWS} draws (beta={beta}, num_clients={num_clients}, "
        f"min_size={min_size}); raise beta or lower num_clients or min_size"
    )


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _num_labels(labels: np.ndarray, num_classes: int | None) -> int:
    """``L``: ``num_classes`` if given (checked against the labels), else ``labels.max() + 1``."""
    if labels.size and labels.min() < 0:
        raise ConfigError(f"label {labels.min()} is negative; labels must be >= 0")
    observed = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        return observed
    if not _is_int(num_classes) or num_classes < max(observed, 1):
        raise ConfigError(
            f"num_classes={num_classes} must be an integer >= {max(observed, 1)} "
            f"(the largest label + 1)"
        )
    return int(num_classes)


Partitioner = Callable[..., list[np.ndarray]]

PARTITIONERS: dict[str, Partitioner] = {
    "iid": iid,
    "dirichlet": dirichlet,
    "shards": shards,
    "label_quantity": label_quantity,
    "quantity": quantity,
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
        hyper-parameter (e.g. ``alpha <= 0``, ``labels_per_client`` above the number of labels).
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
