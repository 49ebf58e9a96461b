"""Tests for FederatedData, the per-client test split rule and the offline datasets."""

import math
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.data import datasets
from fedsim.data.arrays import ArrayDataset
from fedsim.data.datasets import DATASETS, load_dataset
from fedsim.data.federated import build_federated_data, make_federation
from fedsim.errors import ConfigError


def _toy_dataset(rng, num_train, num_test, num_classes) -> ArrayDataset:
    """Skewed labels; image i of each split is the constant i, so indices can be read back."""

    def labels(n):
        return rng.choice(num_classes, size=n, p=rng.dirichlet(np.ones(num_classes))).astype(
            np.int32
        )

    def images(n):
        return np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)

    return ArrayDataset(
        "toy", images(num_train), labels(num_train), images(num_test), labels(num_test), num_classes
    )


def _reference_test_counts(train_labels, dataset, min_test) -> np.ndarray:
    """The module docstring's rule, written plainly with exact fractions."""
    n, num_classes = len(train_labels), dataset.num_classes
    m, big_n = len(dataset.y_test), len(dataset.y_train)
    if n == 0:
        return np.zeros(num_classes, int)
    t = min(m, max(min_test, round(n * m / big_n)))
    quotas = [Fraction(t * int(h), n) for h in np.bincount(train_labels, minlength=num_classes)]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(num_classes), key=lambda c: -(quotas[c] - counts[c]))
    for c in by_remainder[: t - sum(counts)]:
        counts[c] += 1
    return np.minimum(counts, np.bincount(dataset.y_test, minlength=num_classes))


@st.composite
def federations(draw):
    """A toy dataset and an arbitrary assignment of its examples to clients (some may be empty)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dataset = _toy_dataset(
        rng,
        num_train=draw(st.integers(20, 400)),
        num_test=draw(st.integers(5, 150)),
        num_classes=draw(st.integers(2, 6)),
    )
    num_clients = draw(st.integers(1, 20))
    owner = rng.integers(0, num_clients, len(dataset.y_train))
    client_train = [rng.permutation(np.flatnonzero(owner == k)) for k in range(num_clients)]
    return dataset, client_train, draw(st.integers(0, 40)), rng


@settings(max_examples=60, deadline=None)
@given(federation=federations())
def test_index_tables_round_trip_and_pad_with_zero(federation):
    dataset, client_train, min_test, rng = federation
    fed = build_federated_data(dataset, client_train, rng, min_test=min_test)
    sizes = [len(idx) for idx in client_train]
    assert fed.num_clients == len(client_train)
    assert fed.client_indices.dtype == fed.num_examples.dtype == np.int32
    assert fed.client_indices.shape == (len(client_train), max(sizes))
    np.testing.assert_array_equal(fed.num_examples, sizes)
    x, y, mask = fed.stacked()
    np.testing.assert_array_equal(mask.sum(axis=1), sizes)
    for c, idx in enumerate(client_train):
        np.testing.assert_array_equal(fed.client_indices[c, : len(idx)], idx)
        assert not fed.client_indices[c, len(idx) :].any()
        cx, cy = fed.client_arrays(c)
        np.testing.assert_array_equal(cx[:, 0, 0, 0], idx)
        np.testing.assert_array_equal(cy, dataset.y_train[idx])
        np.testing.assert_array_equal(x[c][mask[c]], cx)
        np.testing.assert_array_equal(y[c][mask[c]], cy)
        np.testing.assert_array_equal(
            fed.label_histogram[c], np.bincount(cy, minlength=dataset.num_classes)
        )


@settings(max_examples=60, deadline=None)
@given(federation=federations())
def test_test_split_follows_the_training_label_distribution(federation):
    dataset, client_train, min_test, rng = federation
    fed = build_federated_data(dataset, client_train, rng, min_test=min_test)
    assert fed.client_test_indices.dtype == fed.num_test.dtype == np.int32
    assert fed.client_test_indices.shape == (len(client_train), fed.num_test.max())
    for c, idx in enumerate(client_train):
        expected = _reference_test_counts(dataset.y_train[idx], dataset, min_test)
        test_idx = fed.client_test_indices[c, : fed.num_test[c]]
        assert not fed.client_test_indices[c, fed.num_test[c] :].any()
        assert len(np.unique(test_idx)) == len(test_idx), "drawn with replacement"
        got = np.bincount(dataset.y_test[test_idx], minlength=dataset.num_classes)
        np.testing.assert_array_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(federation=federations(), data=st.data())
def test_given_client_test_splits_are_used_as_is(federation, data):
    dataset, client_train, min_test, rng = federation
    m = len(dataset.y_test)
    client_test = [
        np.array(data.draw(st.lists(st.integers(0, m - 1), max_size=30)), dtype=np.int64)
        for _ in client_train
    ]
    reference = build_federated_data(dataset, client_train, np.random.default_rng(0))
    state = rng.bit_generator.state
    fed = build_federated_data(
        dataset, client_train, rng, min_test=min_test, client_test=client_test
    )
    assert rng.bit_generator.state == state, "the rng is not used when client_test is given"
    sizes = [len(idx) for idx in client_test]
    assert fed.client_test_indices.dtype == fed.num_test.dtype == np.int32
    assert fed.client_test_indices.shape == (len(client_train), max(sizes))
    np.testing.assert_array_equal(fed.num_test, sizes)
    for c, idx in enumerate(client_test):
        np.testing.assert_array_equal(fed.client_test_indices[c, : len(idx)], idx)
        assert not fed.client_test_indices[c, len(idx) :].any()
    for field in ("client_indices", "num_examples", "label_histogram"):
        np.testing.assert_array_equal(getattr(fed, field), getattr(reference, field))


def test_given_client_test_splits_are_checked_in_one_line():
    dataset = _toy_dataset(np.random.default_rng(0), 30, 10, 3)
    client_train = [np.arange(15), np.arange(15, 30)]
    cases = [
        ([np.arange(10)], "client_test has 1 clients but client_train has 2"),
        ([np.arange(5), np.array([10])], "client test index 10 is outside the 10 test examples"),
        ([np.array([-1]), np.arange(3)], "client test index -1 is outside"),
    ]
    for client_test, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            build_federated_data(
                dataset, client_train, np.random.default_rng(0), client_test=client_test
            )
        assert "\n" not in str(err.value)
    fed = build_federated_data(
        dataset, client_train, np.random.default_rng(0), client_test=[np.zeros(0, int)] * 2
    )
    assert fed.client_test_indices.shape == (2, 0) and not fed.num_test.any()


def test_absent_training_classes_are_absent_from_the_test_split():
    fed = make_federation(load_dataset("digits"), "dirichlet", 20, seed=1, alpha=0.1)
    for c in range(fed.num_clients):
        test_labels = fed.y_test[fed.client_test_indices[c, : fed.num_test[c]]]
        test_hist = np.bincount(test_labels, minlength=fed.num_classes)
        assert not test_hist[fed.label_histogram[c] == 0].any()
        assert fed.num_test[c] >= 20


def test_make_federation_is_deterministic_under_the_seed():
    dataset = load_dataset("synthetic")
    a, b, c = (make_federation(dataset, "dirichlet", 8, seed=s, alpha=0.3) for s in (5, 5, 6))
    for field in ("client_indices", "client_test_indices", "label_histogram"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.client_indices, c.client_indices)


def test_build_rejects_bad_input_in_one_line():
    dataset = _toy_dataset(np.random.default_rng(0), 30, 10, 3)
    cases = [
        ([np.array([0, 30])], "client index 30 is outside the 30 training examples"),
        ([np.array([-1])], "client index -1 is outside"),
        ([], r"client_train=\[\] must hold"),
    ]
    for client_train, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            build_federated_data(dataset, client_train, np.random.default_rng(0))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="min_test=-1 must be >= 0"):
        build_federated_data(dataset, [np.arange(30)], np.random.default_rng(0), min_test=-1)


def test_ten_thousand_clients_build_quickly():
    rng = np.random.default_rng(0)
    dataset = ArrayDataset(
        "labels_only",
        np.zeros((100_000, 1, 1, 1), np.float32),
        rng.integers(0, 10, 100_000).astype(np.int32),
        np.zeros((10_000, 1, 1, 1), np.float32),
        rng.integers(0, 10, 10_000).astype(np.int32),
        10,
    )
    start = time.perf_counter()
    fed = make_federation(dataset, "iid", 10_000, seed=0)
    assert time.perf_counter() - start < 10.0
    assert fed.client_indices.shape == (10_000, 10)
    assert fed.num_test.min() == 20


EXPECTED_SIZES = {
    "mnist_subset": ((28, 28, 1), 4000, 1000),
    "digits": ((8, 8, 1), 1438, 359),
    "synthetic": ((28, 28, 1), 2000, 500),
    "synthetic_cifar": ((32, 32, 3), 50000, 10000),
}


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "npz"])  # npz: tests/test_cli.py
def test_dataset_shapes_dtypes_and_ranges(name):
    dataset = load_dataset(name)
    image_shape, num_train, num_test = EXPECTED_SIZES[name]
    assert dataset.name == name and dataset.num_classes == 10
    assert dataset.x_train.shape == (num_train, *image_shape)
    assert dataset.x_test.shape == (num_test, *image_shape)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int32
    for x in (dataset.x_train, dataset.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(dataset.y_train)) == set(np.unique(dataset.y_test)) == set(range(10))
    with pytest.raises(ValueError, match="read-only"):
        dataset.y_train[0] = 1


def test_mnist_subset_split_is_stratified_and_independent_of_seed():
    first = load_dataset("mnist_subset", seed=0)
    np.testing.assert_array_equal(np.bincount(first.y_test), np.full(10, 100))
    x_test = first.x_test.copy()
    datasets._mnist_subset.cache_clear()
    second = load_dataset("mnist_subset", seed=123)
    np.testing.assert_array_equal(second.x_test, x_test)


def test_synthetic_is_seeded_and_learnable():
    a, b, c = (
        load_dataset("synthetic", 0),
        load_dataset("synthetic", 0),
        load_dataset("synthetic", 1),
    )
    assert a is b and not np.array_equal(a.x_train, c.x_train)
    flat_train, flat_test = a.x_train.reshape(2000, -1), a.x_test.reshape(500, -1)
    means = np.stack([flat_train[a.y_train == k].mean(axis=0) for k in range(10)])
    scores = flat_test @ means.T - 0.5 * (means**2).sum(axis=1)  # a linear classifier
    assert (scores.argmax(axis=1) == a.y_test).mean() > 0.5


def test_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="dataset='cifar' is neither a fedsim dataset") as err:
        load_dataset("cifar")
    assert all(name in str(err.value) for name in DATASETS)
