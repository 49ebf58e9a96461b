"""One client's local schedule for a round, as static-shape index tables (pure, jittable).

A client with ``n`` real examples, padded to ``N_max``, runs ``epochs * ceil(N_max / B)`` steps; each
epoch visits its real examples once in a fresh random order, packed first, so the client's real steps are
the first ``ceil(n / B)`` of every epoch (the last one possibly partial) and the rest are padding that the
example mask switches off. One compiled round therefore serves every client size.
"""

import jax
import jax.numpy as jnp


def steps_per_epoch(max_examples: int, batch_size: int) -> int:
    """Padded steps per epoch shared by all clients of a federation."""
    return -(-max_examples // batch_size)


def client_batches(key, client_indices, num_examples, *, epochs: int, batch_size: int):
    """Index tables for one client's local epochs.

    Args:
      key: PRNG key for this client and round.
      client_indices: int32 ``[N_max]`` indices of the client's examples in the pooled arrays.
      num_examples: int32 scalar, how many leading entries of ``client_indices`` are real.
      epochs, batch_size: the local schedule.

    Returns:
      ``(batch_indices, batch_mask)``, each ``[epochs * steps_per_epoch, batch_size]``: indices into the
      pooled arrays and a bool mask that is False on padding.
    """
    client_indices = jnp.asarray(client_indices)
    n_max = client_indices.shape[0]
    steps = steps_per_epoch(n_max, batch_size)
    slots = steps * batch_size
    position = jnp.arange(n_max)

    def one_epoch(epoch_key):
        noise = jax.random.uniform(epoch_key, (n_max,))
        order = jnp.argsort(jnp.where(position < num_examples, noise, 2.0))
        order = jnp.pad(order, (0, slots - n_max))
        mask = jnp.arange(slots) < num_examples
        return client_indices[order].reshape(steps, batch_size), mask.reshape(steps, batch_size)

    indices, mask = jax.vmap(one_epoch)(jax.random.split(key, epochs))
    return indices.reshape(-1, batch_size), mask.reshape(-1, batch_size)
