"""Normalised models: parameter counts, BatchNorm state in train and eval, padding kept out of batch
statistics, the GroupNorm variant and the norm choice. Counts are taken on abstract shapes and
behaviour on tiny widths whose variables are filled by numpy: compiling the initialisers' random
draws costs seconds per shape on CPU."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.models import get_model

TINY = {"bn_cnn": {"width": 2, "hidden": 8}, "resnet18": {"width": 2}, "vgg11": {"width": 2}}
SHAPES = {"bn_cnn": (28, 28, 1), "resnet18": (32, 32, 3), "vgg11": (32, 32, 3)}
KEY = jax.random.PRNGKey(0)


@functools.cache
def _tiny(name, norm="batch"):
    """A tiny model, its variables (running means 0 and variances 1, parameters ~ N(0, 1/fan_in))
    and a batch of 4."""
    model = get_model(name, 10, norm=norm, **TINY[name])
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, *SHAPES[name])), jnp.float32)

    def fill(path, leaf):
        if path[-1].key in ("mean", "var"):
            return jnp.full(leaf.shape, float(path[-1].key == "var"))
        fan_in = math.prod(leaf.shape[:-1])
        return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in), leaf.dtype)

    abstract = jax.eval_shape(model.init, KEY, x[:1])
    model = model._replace(apply=jax.jit(model.apply, static_argnums=2))
    return model, jax.tree_util.tree_map_with_path(fill, abstract), x


def _close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5), a, b)


@pytest.mark.parametrize(
    ("name", "params"), [("bn_cnn", 77_632), ("resnet18", 11_173_962), ("vgg11", 9_231_114)]
)
def test_parameter_counts(name, params):
    mv = jax.eval_shape(get_model(name, 10).init, KEY, jnp.zeros((1, *SHAPES[name])))
    assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(mv.params)) == params
    assert list(mv.state) == ["batch_stats"]


@pytest.mark.parametrize("name", list(TINY))
def test_train_updates_batch_stats_and_eval_uses_running_averages(name):
    model, mv, x = _tiny(name)
    train_logits, state = model.apply(mv, x, True, KEY)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, mv.state)))

    trained = mv._replace(state=state)
    logits, eval_state = model.apply(trained, x, False, KEY)
    jax.tree.map(np.testing.assert_array_equal, eval_state, state)
    assert not np.allclose(logits, train_logits, atol=1e-3)
    assert not np.allclose(logits, model.apply(mv, x, False, KEY)[0], atol=1e-3)
    # Running averages make each example's logits independent of the rest of the batch.
    other, _ = model.apply(trained, x.at[1:].set(-x[1:]), False, KEY)
    _close(other[0], logits[0])


@pytest.mark.parametrize("name", list(TINY))
def test_padded_rows_stay_out_of_batch_statistics(name):
    model, mv, x = _tiny(name)
    padded = x.at[2:].set(1e6)
    logits, state = model.apply(mv, padded, True, KEY, mask=jnp.arange(4) < 2)
    want_logits, want_state = model.apply(mv, x[:2], True, KEY)
    _close(logits[:2], want_logits)
    _close(state, want_state)


@pytest.mark.parametrize("name", list(TINY))
def test_group_norm_has_no_batch_stats(name):
    model, mv, x = _tiny(name, "group")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(mv.params)]
    assert mv.state == {} and any("GroupNorm" in p for p in paths)
    logits, state = model.apply(mv, x, True, KEY, mask=jnp.arange(4) < 2)
    assert logits.shape == (4, 10) and state == {} and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", list(TINY))
def test_unknown_norm_is_rejected(name):
    with pytest.raises(ValueError, match="norm='layer'"):
        get_model(name, 10, norm="layer")
