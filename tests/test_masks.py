"""Masks, magnitude pruning, the sparse byte rule and mask-aware aggregation, against hand-written
references."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.algorithms import masked
from fedsim.algorithms.base import ClientTask, Dataset
from fedsim.compress import masks, pruning
from fedsim.compress.encode import masked_bytes, masked_leaf_bytes
from fedsim.models.base import from_flax


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(nn.relu(x).reshape((x.shape[0], -1)))


def params_of(module=None):
    model = from_flax("convbn", module or ConvBN())
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1))).params


def test_only_conv_and_dense_kernels_are_prunable():
    flags = masks.prunable(params_of())
    assert flags["Conv_0"] == {"kernel": True, "bias": False}
    assert flags["Dense_0"] == {"kernel": True, "bias": False}
    assert flags["BatchNorm_0"] == {"scale": False, "bias": False}
    shared, norm = masks.split_norm(params_of())
    assert sorted(norm) == ["BatchNorm_0/bias", "BatchNorm_0/scale"]
    assert "Conv_0/kernel" in shared


def test_split_and_merge_norm_round_trip():
    params = params_of()
    _, norm = masks.split_norm(params)
    swapped = masks.merge_norm(jax.tree.map(jnp.zeros_like, params), norm)
    np.testing.assert_array_equal(swapped["BatchNorm_0"]["scale"], params["BatchNorm_0"]["scale"])
    assert not np.any(swapped["Conv_0"]["kernel"])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.floats(0, 0.99), st.integers(0, 2**31 - 1))
def test_layer_pruning_drops_exactly_the_smallest_survivors(size, rate, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(size, 1)).astype(np.float32)
    alive = rng.random((size, 1)) < 0.8
    params = {"Dense_0": {"kernel": jnp.asarray(w)}}
    new = pruning.magnitude_prune(params, {"Dense_0": {"kernel": jnp.asarray(alive)}}, rate)
    kept = np.asarray(new["Dense_0"]["kernel"])
    num_drop = math.floor(np.float32(rate) * alive.sum())
    assert kept.sum() == alive.sum() - num_drop
    assert not np.any(kept & ~alive)
    dropped, survivors = np.abs(w[alive & ~kept]), np.abs(w[kept])
    if dropped.size and survivors.size:
        assert dropped.max() <= survivors.min()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.integers(0, 300), st.integers(0, 2**31 - 1))
def test_selection_equals_a_sorted_threshold_with_ties(size, num_drop, seed):
    """The bisection threshold is the ``num_drop``-th smallest surviving magnitude, as a sort gives;
    ties (including zeros and huge values) at the threshold go together."""
    rng = np.random.default_rng(seed)
    values = np.array([0.0, 1e-30, 0.5, 0.5, 1.0, 3.0, 3.4e38], np.float32)
    magnitudes = rng.choice(values, size) if seed % 2 else rng.random(size).astype(np.float32)
    alive = rng.random(size) < 0.7
    scores = np.where(alive, magnitudes, np.inf)
    threshold = np.sort(scores)[min(max(num_drop, 1), size) - 1]
    expected = alive & ((scores > threshold) | (num_drop == 0))
    kept = pruning._drop_smallest(jnp.asarray(magnitudes), jnp.asarray(alive), jnp.int32(num_drop))
    np.testing.assert_array_equal(np.asarray(kept), expected)


def test_global_scope_ranks_across_layers_and_prune_to_density():
    params = {
        "a": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2)},
        "b": {"kernel": 100 + jnp.arange(8.0).reshape(2, 4)},
    }
    mask = masks.init_mask(params)
    by_layer = pruning.magnitude_prune(params, mask, 0.5, "layer")
    assert int(by_layer["a"]["kernel"].sum()) == int(by_layer["b"]["kernel"].sum()) == 4
    global_ = pruning.magnitude_prune(params, mask, 0.5, "global")
    assert not global_["a"]["kernel"].any() and global_["b"]["kernel"].all()
    tenth = pruning.prune_to_density(params, mask, 0.25, "layer")
    assert float(masks.density(tenth, params)) == 0.25
    with pytest.raises(ValueError, match="scope='both'"):
        pruning.magnitude_prune(params, mask, 0.5, "both")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.data())
def test_byte_rule_is_the_smallest_encoding(size, data):
    kept = data.draw(st.integers(0, size))
    expected = min(4 * size, math.ceil(size / 8) + 4 * kept, 8 * kept)
    assert int(masked_leaf_bytes(size, kept)) == expected
    if 32 * kept > size and kept < size:  # above density 1/32 the bitmap beats index pairs
        assert math.ceil(size / 8) + 4 * kept <= 8 * kept


def test_model_bytes_count_kernels_sparse_and_everything_else_dense():
    params = params_of()
    mask = pruning.prune_to_density(params, masks.init_mask(params), 0.1, "layer")
    conv, dense = params["Conv_0"]["kernel"].size, params["Dense_0"]["kernel"].size
    kept = [int(np.asarray(mask[k]["kernel"]).sum()) for k in ("Conv_0", "Dense_0")]
    dense_rest = 4 * (4 + 3 + 8)  # conv bias, dense bias, BN scale and bias
    expected = sum(
        min(4 * n, math.ceil(n / 8) + 4 * z, 8 * z)
        for n, z in zip((conv, dense), kept, strict=True)
    )
    assert int(masked_bytes(params, mask)) == expected + dense_rest
    assert int(masked_bytes(params, mask, skip_norm=True)) == expected + dense_rest - 32
    assert int(masked_bytes(params, mask, values_only=True)) == 4 * sum(kept) + dense_rest


def test_masked_average_equals_a_per_coordinate_loop():
    rng = np.random.default_rng(3)
    server = rng.normal(size=(4, 3))
    weights = rng.normal(size=(3, 4, 3))
    client_masks = rng.random((3, 4, 3)) < 0.4
    a = np.array([1.0, 2.0, 0.5])
    total = None
    for k in range(3):
        part = masked.masked_contribution(
            {"w": jnp.asarray(weights[k])},
            {"w": jnp.asarray(server)},
            {"w": jnp.asarray(client_masks[k])},
            a[k],
        )
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    got = np.asarray(masked.masked_average(total, {"w": jnp.asarray(server)})["w"])
    for i in range(4):
        for j in range(3):
            num = sum(a[k] * weights[k, i, j] for k in range(3) if client_masks[k, i, j])
            den = sum(a[k] for k in range(3) if client_masks[k, i, j])
            want = num / den if den > 0 else server[i, j]
            assert got[i, j] == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("optimizer", [optax.sgd(0.1, momentum=0.5), optax.adam(0.01)])
def test_pruned_coordinates_stay_exactly_zero_in_training(optimizer):
    model = from_flax("convbn", ConvBN())
    init = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))
    mask = pruning.prune_to_density(init.params, masks.init_mask(init.params), 0.3)
    x = jax.random.normal(jax.random.PRNGKey(1), (12, 4, 4, 1))
    y = jnp.arange(12) % 3
    task = ClientTask(
        jnp.arange(12).reshape(3, 4),
        jnp.ones((3, 4), bool),
        jnp.int32(12),
        jax.random.PRNGKey(2),
        jnp.int32(0),
        jnp.zeros((0,), jnp.int32),
        jnp.zeros((0,), bool),
        jnp.arange(12),
    )
    result = masked.masked_local_train(model, optimizer, init, mask, task, Dataset(x, y))
    for p, m in zip(jax.tree.leaves(result.model.params), jax.tree.leaves(mask), strict=True):
        assert not np.any(np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)])
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), result.model.params, init.params)
    assert moved["Conv_0"]["kernel"] and moved["BatchNorm_0"]["scale"]
