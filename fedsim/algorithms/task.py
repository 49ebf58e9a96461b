"""What a round hands each client: the federation's device arrays, one client's local task built from
them, and the accepted client-sampling schemes (``fedsim.engine.round`` samples with them)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.algorithms.base import ClientTask
from fedsim.data.batching import client_batches

SAMPLING = ("fixed", "poisson")


class Federation(NamedTuple):
    """The device-resident arrays a round reads (see ``fedsim.data.federated.FederatedData``)."""

    x: jax.Array
    y: jax.Array
    client_indices: jax.Array  # int32 [C, N_max]
    num_examples: jax.Array  # int32 [C]
    val_indices: jax.Array | None = None  # int32 [C, V_max] held-out validation examples
    num_val: jax.Array | None = None  # int32 [C]


def client_task(federation: Federation, row, key, *, epochs: int, batch_size: int) -> ClientTask:
    """Client ``row``'s local schedule for one round (or one fine-tuning pass) under ``key``."""
    batch_key, task_key = jax.random.split(key)
    num_examples = federation.num_examples[row]
    examples = federation.client_indices[row]
    indices, mask = client_batches(
        batch_key,
        examples,
        num_examples,
        epochs=epochs,
        batch_size=batch_size,
    )
    if federation.val_indices is None:
        val_indices, val_mask = jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool)
    else:
        val_indices = federation.val_indices[row]
        val_mask = jnp.arange(val_indices.shape[0]) < federation.num_val[row]
    return ClientTask(
        indices, mask, num_examples, task_key, jnp.int32(row), val_indices, val_mask, examples
    )
