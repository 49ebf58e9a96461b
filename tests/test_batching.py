"""The local schedule visits each real example exactly once per epoch and never a padded one."""

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.data.batching import client_batches, steps_per_epoch


@settings(max_examples=25, deadline=None)
@given(
    n_max=st.integers(1, 40),
    fill=st.floats(0.01, 1.0),
    batch_size=st.integers(1, 16),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_each_real_example_once_per_epoch(n_max, fill, batch_size, epochs, seed):
    n = max(1, round(fill * n_max))
    row = np.arange(100, 100 + n_max, dtype=np.int32)
    idx, mask = client_batches(
        jax.random.PRNGKey(seed), row, np.int32(n), epochs=epochs, batch_size=batch_size
    )
    idx, mask = np.asarray(idx), np.asarray(mask)
    steps = steps_per_epoch(n_max, batch_size)
    assert idx.shape == mask.shape == (epochs * steps, batch_size)
    for e in range(epochs):
        epoch_idx = idx[e * steps : (e + 1) * steps]
        epoch_mask = mask[e * steps : (e + 1) * steps]
        assert sorted(epoch_idx[epoch_mask].tolist()) == list(range(100, 100 + n))
        # real examples are packed first: ceil(n / B) steps have data, the rest none
        assert epoch_mask.any(axis=1).sum() == -(-n // batch_size)


def test_epochs_reshuffle_and_seed_determines_order():
    row = np.arange(30, dtype=np.int32)
    a, _ = client_batches(jax.random.PRNGKey(0), row, np.int32(30), epochs=2, batch_size=5)
    b, _ = client_batches(jax.random.PRNGKey(0), row, np.int32(30), epochs=2, batch_size=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:6], a[6:])
