"""FederatedData: a federation stored as pooled arrays plus padded per-client index tables.

Per-client test split, so that personalised accuracy is measured on each client's own label
distribution. With ``N``/``M`` the pooled train/test sizes, client ``k`` holding ``n_k > 0``
training examples gets ``t_k = min(M, max(min_test, round(n_k * M / N)))`` test examples, drawn
from the pooled test set without replacement within the client (different clients may share
examples). Its per-class counts split ``t_k`` in proportion to the client's training label
histogram by largest-remainder rounding, each capped by the number of test examples of that class;
a shortfall from capping is not made up with other classes. So a class absent from a client's
training data is absent from its test split, and a client with no training data has none.

Natural federations (e.g. Shakespeare, one client per role) have real per-client test data: pass it
as ``client_test`` to ``build_federated_data`` and it is used as given instead of the rule above.
"""

import dataclasses

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.partition import partition
from fedsim.errors import ConfigError


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
    """A federation stored compactly: pooled arrays plus per-client index tables."""

    name: str
    x_train: np.ndarray  # pooled training images [N, ...]
    y_train: np.ndarray  # pooled training labels [N]
    x_test: np.ndarray  # pooled test images [M, ...] (global accuracy)
    y_test: np.ndarray  # pooled test labels [M]
    client_indices: np.ndarray  # int32 [C, N_max]: client c's training indices, padded with 0
    num_examples: np.ndarray  # int32 [C]
    client_test_indices: np.ndarray  # int32 [C, T_max] into the pooled test set, padded with 0
    num_test: np.ndarray  # int32 [C]
    label_histogram: np.ndarray  # int32 [C, num_classes] of each client's training labels
    num_classes: int
    client_val_indices: np.ndarray | None = None  # int32 [C, V_max] held out of training
    num_val: np.ndarray | None = None  # int32 [C]

    @property
    def num_clients(self) -> int:
        return len(self.num_examples)

    def client_arrays(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``c``'s training examples ``(x, y)``, unpadded."""
        idx = self.client_indices[c, : self.num_examples[c]]
        return self.x_train[idx], self.y_train[idx]

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every client's padded training data, for small federations and tests.

        Returns ``x [C, N_max, ...]``, ``y [C, N_max]`` and a bool ``example_mask [C, N_max]`` that
        is False on padding.
        """
        mask = np.arange(self.client_indices.shape[1]) < self.num_examples[:, None]
        return self.x_train[self.client_indices], self.y_train[self.client_indices], mask


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(lengths.sum()) - np.repeat(starts, lengths)


def _padded(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int32 ``[R, max(lengths)]`` table; row r holds the next ``lengths[r]`` values, then zeros."""
    table = np.zeros((len(lengths), lengths.max(initial=0)), dtype=np.int32)
    table[np.repeat(np.arange(len(lengths)), lengths), _ragged_arange(lengths)] = values
    return table


def _test_counts(
    histogram: np.ndarray, test_class_sizes: np.ndarray, num_train: int, min_test: int
) -> np.ndarray:
    """``[C, L]`` per-client, per-class test counts by the rule in the module docstring."""
    n = histogram.sum(axis=1)
    m = int(test_class_sizes.sum())
    target = np.minimum(np.maximum(min_test, np.rint(n * m / num_train)), m).astype(np.int64)
    target[n == 0] = 0
    base, remainder = np.divmod(target[:, None] * histogram, np.maximum(n, 1)[:, None])
    rank = np.argsort(np.argsort(-remainder, axis=1, kind="stable"), axis=1)
    counts = base + (rank < (target - base.sum(axis=1))[:, None])
    return np.minimum(counts, test_class_sizes)


def _distinct_draws(
    sizes: np.ndarray, pool_sizes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each group g, ``sizes[g]`` distinct draws from ``range(pool_sizes[g])``.

    Returns flat ``(group, value)`` arrays. Groups needing over half their pool take a prefix of a
    random permutation of it; the others draw with replacement and redraw duplicates until none
    remain (each redraw collides with probability < 1/2). Work grows with the draws, not C * M.
    """
    dense = np.flatnonzero(2 * sizes > pool_sizes)
    dense_group = np.repeat(dense, pool_sizes[dense])
    shuffled = _ragged_arange(pool_sizes[dense])[
        np.lexsort((rng.random(len(dense_group)), dense_group))
    ]
    keep = _ragged_arange(pool_sizes[dense]) < np.repeat(sizes[dense], pool_sizes[dense])

    sparse = np.flatnonzero(2 * sizes <= pool_sizes)
    group = np.repeat(sparse, sizes[sparse])
    value = rng.integers(0, pool_sizes[group])
    while True:
        order = np.lexsort((value, group))
        g, v = group[order], value[order]
        duplicates = order[1:][(g[1:] == g[:-1]) & (v[1:] == v[:-1])]
        if not duplicates.size:
            break
        value[duplicates] = rng.integers(0, pool_sizes[group[duplicates]])
    return np.concatenate([dense_group[keep], group]), np.concatenate([shuffled[keep], value])


def build_federated_data(
    dataset: ArrayDataset,
    client_train: list[np.ndarray],
    rng: np.random.Generator,
    *,
    min_test: int = 20,
    client_test: list[np.ndarray] | None = None,
) -> FederatedData:
    """Packs per-client training indices into a ``FederatedData`` and draws per-client test splits.

    Args:
      dataset: the pooled data.
      client_train: one array of indices into ``dataset.y_train`` per client (e.g. from
        ``partition``).
      rng: draws the per-client test splits (rule in the module docstring); unused when
        ``client_test`` is given.
      min_test: smallest test split of a client that has training data; unused when
        ``client_test`` is given.
      client_test: optional, one array of indices into ``dataset.y_test`` per client: each
        client's own test split (natural federations), kept in the given order.
    """
    _check_split_arguments(client_train, min_test, client_test)
    flat, lengths, histogram = _train_split(dataset, client_train)
    if client_test is not None:
        test_indices, num_test = _given_test_split(dataset, client_test)
    else:
        test_indices, num_test = _drawn_test_split(dataset, histogram, rng, min_test)

    return FederatedData(
        name=dataset.name,
        x_train=dataset.x_train,
        y_train=dataset.y_train,
        x_test=dataset.x_test,
        y_test=dataset.y_test,
        client_indices=_padded(flat, lengths),
        num_examples=lengths.astype(np.int32),
        client_test_indices=_padded(test_indices, num_test),
        num_test=num_test.astype(np.int32),
        label_histogram=histogram.astype(np.int32),
        num_classes=dataset.num_classes,
    )


def _check_split_arguments(
    client_train: list[np.ndarray], min_test: int, client_test: list[np.ndarray] | None
) -> None:
    """ConfigError (one line) unless there is a client, ``min_test >= 0`` and, when given,
    ``client_test`` has one array per client."""
    if not client_train:
        raise ConfigError("client_train=[] must hold at least one client's indices")
    if min_test < 0:
        raise ConfigError(f"min_test={min_test} must be >= 0")
    if client_test is not None and len(client_test) != len(client_train):
        raise ConfigError(
            f"client_test has {len(client_test)} clients but client_train has "
            f"{len(client_train)}; give one test index array per client"
        )


def _train_split(
    dataset: ArrayDataset, client_train: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat training indices (checked), per-client counts and the ``[C, num_classes]`` label
    histogram of the given per-client training splits."""
    num_train, num_clients, num_classes = (
        len(dataset.y_train),
        len(client_train),
        dataset.num_classes,
    )
    lengths = np.array([len(idx) for idx in client_train], dtype=np.int64)
    flat = np.concatenate(client_train).astype(np.int64)
    if flat.size and not 0 <= flat.min() <= flat.max() < num_train:
        bad = flat.min() if flat.min() < 0 else flat.max()
        raise ConfigError(
            f"client index {bad} is outside the {num_train} training examples of dataset "
            f"{dataset.name}; indices must be in [0, {num_train})"
        )
    owner = np.repeat(np.arange(num_clients), lengths)
    histogram = np.bincount(
        owner * num_classes + dataset.y_train[flat], minlength=num_clients * num_classes
    ).reshape(num_clients, num_classes)
    return flat, lengths, histogram


def _given_test_split(
    dataset: ArrayDataset, client_test: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Flat test indices and per-client counts of the given per-client test splits, checked."""
    num_test_pool = len(dataset.y_test)
    num_test = np.array([len(idx) for idx in client_test], dtype=np.int64)
    flat = np.concatenate([np.asarray(idx).ravel() for idx in client_test]).astype(np.int64)
    if flat.size and not 0 <= flat.min() <= flat.max() < num_test_pool:
        bad = flat.min() if flat.min() < 0 else flat.max()
        raise ConfigError(
            f"client test index {bad} is outside the {num_test_pool} test examples of dataset "
            f"{dataset.name}; indices must be in [0, {num_test_pool})"
        )
    return flat, num_test


def _drawn_test_split(
    dataset: ArrayDataset, histogram: np.ndarray, rng: np.random.Generator, min_test: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat test indices and per-client counts drawn by the rule in the module docstring."""
    num_clients, num_classes = histogram.shape
    num_train = len(dataset.y_train)
    test_class_sizes = np.bincount(dataset.y_test, minlength=num_classes)
    counts = _test_counts(histogram, test_class_sizes, num_train, min_test)
    client, cls = np.nonzero(counts)
    group, value = _distinct_draws(counts[client, cls], test_class_sizes[cls], rng)
    by_class = np.argsort(dataset.y_test, kind="stable")
    class_starts = np.cumsum(test_class_sizes) - test_class_sizes
    test_owner = client[group]
    test_index = by_class[class_starts[cls[group]] + value]
    order = np.lexsort((test_index, test_owner))
    return test_index[order], np.bincount(test_owner, minlength=num_clients)


def make_federation(
    dataset: ArrayDataset,
    partition_name: str,
    num_clients: int,
    seed: int,
    *,
    min_test: int = 20,
    **hparams,
) -> FederatedData:
    """Partitions ``dataset`` and builds its ``FederatedData``; one seed determines both steps.

    >>> from fedsim.data.datasets import load_dataset
    >>> fed = make_federation(load_dataset("digits"), "dirichlet", 10, seed=0, alpha=0.5)
    >>> fed.num_clients, int(fed.num_examples.sum())
    (10, 1438)
    """
    rng = np.random.default_rng(seed)
    client_train = partition(
        partition_name, dataset.y_train, num_clients, rng, dataset_name=dataset.name, **hparams
    )
    return build_federated_data(dataset, client_train, rng, min_test=min_test)


def hold_out_validation(data: FederatedData, fraction: float, seed: int) -> FederatedData:
    """Moves ``round(fraction * n_k)`` of each client's training examples to a validation split.

    The split is stratified by label (largest-remainder counts per class, at least one example for a
    client with two or more) and drawn with ``seed``; training keeps the rest. The label histogram
    and test splits stay those of the full client data.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction} must be in [0, 1)")
    if fraction == 0.0:
        return data
    rng = np.random.default_rng([seed, 7])
    train_rows, val_rows = [], []
    for c in range(data.num_clients):
        idx = data.client_indices[c, : data.num_examples[c]]
        n = len(idx)
        n_val = min(max(int(round(fraction * n)), 1 if n >= 2 else 0), max(n - 1, 0))
        labels = data.y_train[idx]
        classes, counts = np.unique(labels, return_counts=True)
        share = counts * n_val / max(n, 1)
        per_class = np.floor(share).astype(int)
        extra = np.argsort(-(share - per_class), kind="stable")[: n_val - per_class.sum()]
        per_class[extra] += 1
        held = np.zeros(n, bool)
        for cls, k in zip(classes, per_class, strict=True):
            members = np.flatnonzero(labels == cls)
            held[rng.choice(members, size=k, replace=False)] = True
        train_rows.append(idx[~held])
        val_rows.append(idx[held])
    num_train = np.array([len(r) for r in train_rows], np.int64)
    num_val = np.array([len(r) for r in val_rows], np.int64)
    return dataclasses.replace(
        data,
        client_indices=_padded(np.concatenate(train_rows), num_train),
        num_examples=num_train.astype(np.int32),
        client_val_indices=_padded(np.concatenate(val_rows), num_val),
        num_val=num_val.astype(np.int32),
    )
