"""Property tests for the partitioners of baselines.md section 10."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.data.partition import PARTITIONERS, dirichlet, iid, partition
from fedsim.errors import ConfigError

NAMES = ("iid", "dirichlet")


@st.composite
def problems(draw) -> tuple[np.ndarray, int, float]:
    """Skewed labels (100-2,000 over 2-10 classes), 2-50 clients with >= 40 examples on average,
    and an alpha for which a dirichlet split exists with overwhelming probability."""
    n = draw(st.integers(100, 2000))
    num_classes = draw(st.integers(2, 10))
    num_clients = draw(st.integers(2, min(50, n // 40)))
    label_rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    class_probs = label_rng.dirichlet(np.full(num_classes, 2.0))
    labels = label_rng.choice(num_classes, size=n, p=class_probs)
    return labels, num_clients, draw(st.floats(0.5, 10.0))


def _split(name, labels, num_clients, alpha, seed) -> list[np.ndarray]:
    return partition(name, labels, num_clients, np.random.default_rng(seed), alpha=alpha)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(problem=problems(), seed=st.integers(0, 2**32 - 1))
def test_every_index_once_and_label_counts_add_up(name, problem, seed):
    labels, num_clients, alpha = problem
    parts = _split(name, labels, num_clients, alpha, seed)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 and p.ndim == 1 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    per_client = [np.bincount(labels[p], minlength=labels.max() + 1) for p in parts]
    np.testing.assert_array_equal(np.sum(per_client, axis=0), np.bincount(labels))


@settings(max_examples=40, deadline=None)
@given(problem=problems(), seed=st.integers(0, 2**32 - 1))
def test_iid_sizes_differ_by_at_most_one(problem, seed):
    labels, num_clients, alpha = problem
    sizes = [len(p) for p in _split("iid", labels, num_clients, alpha, seed)]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=40, deadline=None)
@given(problem=problems(), seed=st.integers(0, 2**32 - 1), min_size=st.sampled_from([1, 5, 10]))
def test_dirichlet_clients_reach_min_size(problem, seed, min_size):
    labels, num_clients, alpha = problem
    parts = dirichlet(
        labels, num_clients, np.random.default_rng(seed), alpha=alpha, min_size=min_size
    )
    assert min(len(p) for p in parts) >= min(min_size, len(labels) // num_clients)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(problem=problems(), seed=st.integers(0, 2**32 - 2))
def test_deterministic_under_seed_and_varies_across_seeds(name, problem, seed):
    labels, num_clients, alpha = problem
    first = _split(name, labels, num_clients, alpha, seed)
    again = _split(name, labels, num_clients, alpha, seed)
    other = _split(name, labels, num_clients, alpha, seed + 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_partition_dispatches_and_ignores_unused_hparams():
    labels = np.arange(500) % 5
    direct = iid(labels, 7, np.random.default_rng(3))
    via_registry = partition("iid", labels, 7, np.random.default_rng(3), alpha=0.1, min_size=99)
    assert all(np.array_equal(a, b) for a, b in zip(direct, via_registry, strict=True))
    assert set(NAMES) <= set(PARTITIONERS)


def test_smaller_alpha_gives_more_label_skew():
    labels = np.arange(2000) % 10

    def mean_top_class_share(alpha):
        parts = dirichlet(labels, 10, np.random.default_rng(0), alpha=alpha)
        return np.mean([np.bincount(labels[p]).max() / len(p) for p in parts])

    assert mean_top_class_share(0.1) > 0.5
    assert mean_top_class_share(100.0) < 0.2


def _one_line_error(match, *args, **kwargs) -> str:
    with pytest.raises(ConfigError, match=match) as err:
        partition(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_partition_is_rejected_with_the_accepted_names():
    message = _one_line_error("partition='nope'", "nope", np.zeros(100, int), 5, None)
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_non_positive_alpha_is_rejected(alpha):
    _one_line_error(
        f"alpha={alpha} must be > 0", "dirichlet", np.zeros(100, int), 5, None, alpha=alpha
    )


def test_too_many_clients_is_rejected_with_the_dataset_name():
    message = _one_line_error(
        "num_clients=5000",
        "iid",
        np.zeros(4000, int),
        5000,
        None,
        dataset_name="mnist_subset",
    )
    assert message == "num_clients=5000 exceeds the 4000 training examples of dataset mnist_subset"


@pytest.mark.parametrize("num_clients", [0, -3])
def test_fewer_than_one_client_is_rejected(num_clients):
    _one_line_error(
        f"num_clients={num_clients} must be >= 1", "iid", np.zeros(10, int), num_clients, None
    )


@pytest.mark.parametrize("alpha", [0.01, 1e-6])
def test_infeasible_dirichlet_gives_up_naming_its_inputs(alpha):
    message = _one_line_error(
        "dirichlet partition",
        "dirichlet",
        np.arange(1000) % 2,
        50,
        np.random.default_rng(0),
        alpha=alpha,
    )
    assert f"alpha={alpha}" in message and "num_clients=50" in message and "min_size=10" in message
