"""FedOpt server steps follow Reddi et al. 2021 Alg. 2 exactly (no bias correction, v0 = tau^2)."""

import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.algorithms.fedopt import fedopt_transform


@pytest.mark.parametrize("kind", ["adagrad", "adam", "yogi"])
def test_two_steps_match_the_paper(kind):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    deltas = [np.array([0.3, -0.1, 0.0]), np.array([-0.2, 0.4, 0.05])]
    transform = fedopt_transform(kind, lr, b1, b2, tau)
    state = transform.init(params)
    m, v = np.zeros(3), np.full(3, tau**2)
    for delta in deltas:
        updates, state = transform.update({"w": jnp.asarray(-delta)}, state, params)
        m = b1 * m + (1 - b1) * delta
        d2 = delta * delta
        v = {"adagrad": v + d2, "adam": b2 * v + (1 - b2) * d2}.get(
            kind, v - (1 - b2) * d2 * np.sign(v - d2)
        )
        np.testing.assert_allclose(updates["w"], lr * m / (np.sqrt(v) + tau), rtol=1e-5)


def test_unknown_second_moment():
    with pytest.raises(ValueError, match="second_moment='rmsprop'"):
        fedopt_transform("rmsprop", 0.1)
