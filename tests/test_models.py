"""Models: shapes, the papers' parameter counts, and both convolution implementations agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.models import count_params, get_model
from fedsim.models.layers import max_pool_2x2


@pytest.mark.parametrize(
    ("name", "params"),
    [("cnn", 1_663_370), ("lenet5", 61_706), ("mlp", 784 * 200 + 200 + 200 * 200 + 200 + 2010)],
)
def test_parameter_counts_on_mnist(name, params):
    model = get_model(name, 10)
    mv = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    assert count_params(mv.params) == params
    logits, state = model.apply(mv, jnp.zeros((3, 28, 28, 1)), True, jax.random.PRNGKey(1))
    assert logits.shape == (3, 10) and state == mv.state


@pytest.mark.parametrize("name", ["cnn", "lenet5", "simple_cnn"])
def test_conv_implementations_agree(name):
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 28, 28, 1))
    xla, *others = (get_model(name, 10, conv_impl=i) for i in ("xla", "im2col", "canonical"))
    mv = xla.init(jax.random.PRNGKey(0), x[:1])
    a, _ = xla.apply(mv, x, False, jax.random.PRNGKey(0))
    for other in others:
        b, _ = other.apply(mv, x, False, jax.random.PRNGKey(0))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_simple_cnn_has_pfl_research_parameter_count():
    """pfl-research's simple_cnn on CIFAR-10: 1,626,442 parameters; dropout only when training."""
    model = get_model("simple_cnn", 10)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 32, 32, 3))
    mv = model.init(jax.random.PRNGKey(0), x[:1])
    assert count_params(mv.params) == 1_626_442
    evaluated = [model.apply(mv, x, False, jax.random.PRNGKey(k))[0] for k in (1, 2)]
    np.testing.assert_array_equal(*evaluated)
    trained = [model.apply(mv, x, True, jax.random.PRNGKey(k))[0] for k in (1, 2)]
    assert trained[0].shape == (3, 10) and not np.allclose(*trained)


def test_max_pool_matches_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 3))
    expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
    np.testing.assert_array_equal(max_pool_2x2(x), expected)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="model='vit'"):
        get_model("vit", 10)


@pytest.mark.parametrize(("padding", "size"), [("SAME", 3), ("SAME", 4), ("VALID", 5)])
def test_canonical_convolution_matches_xla_with_gradients(padding, size):
    """The canonical-form convolution (forward and its hand-written backward) equals lax.conv's."""
    from fedsim.models.layers import conv2d

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (size, size, 3, 5))
    loss = lambda impl: lambda x, k: jnp.sum(jnp.sin(conv2d(x, k, padding, impl)))
    expected = jax.value_and_grad(loss("xla"), (0, 1))(x, kernel)
    got = jax.value_and_grad(loss("canonical"), (0, 1))(x, kernel)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4), got, expected)
