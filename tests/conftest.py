"""Shared fixtures, and eight fake CPU devices for the multi-device tests (set before JAX starts)."""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedsim.algorithms.task import Federation  # noqa: E402
from fedsim.models import get_model  # noqa: E402

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
