"""Shared fixtures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.engine.round import Federation
from fedsim.models import get_model

TOY_SIZES = np.array([5, 12, 9], np.int32)


@pytest.fixture(scope="module")
def toy():
    """Three toy clients of 5, 12 and 9 examples (4 classes), a small MLP and its initial variables."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 2, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    table = np.zeros((len(TOY_SIZES), TOY_SIZES.max()), np.int32)
    order = rng.permutation(40)
    start = 0
    for c, n in enumerate(TOY_SIZES):
        table[c, :n] = order[start : start + n]
        start += n
    fed = Federation(jnp.asarray(x), jnp.asarray(y), jnp.asarray(table), jnp.asarray(TOY_SIZES))
    model = get_model("mlp", 4, hidden=(5,))
    return fed, model, model.init(jax.random.PRNGKey(1), x[:1])
