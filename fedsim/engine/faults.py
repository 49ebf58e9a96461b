"""Simulated client faults inside the jitted round (pure functions of keys and arrays).

- Dropout: each sampled client drops out with probability ``dropout_prob`` per round; it downloads
  the model but uploads nothing, and the aggregate is renormalised over the survivors.
- Stragglers: a fixed ``straggler_fraction`` of the population (chosen once from the seed) finishes
  only ``straggler_work`` of its real local steps every round it is sampled.
- Poisoned clients (host side, before the run): a fixed fraction whose features are NaN.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Faults(NamedTuple):
    dropout_prob: float = 0.0
    straggler_fraction: float = 0.0
    straggler_work: float = 1.0

    @property
    def active(self) -> bool:
        return self.dropout_prob > 0 or (self.straggler_fraction > 0 and self.straggler_work < 1)


NO_FAULTS = Faults()


def is_straggler(key, client_id, num_clients: int, fraction: float):
    """Whether ``client_id`` is one of the ``round(fraction * C)`` stragglers fixed by ``key``."""
    rank = jax.random.permutation(key, num_clients)[client_id]
    return rank < round(fraction * num_clients)


def truncate_work(batch_mask, work: float):
    """Keeps the first ``max(1, floor(work * real_steps))`` steps that have data."""
    real = jnp.any(batch_mask, axis=1)
    budget = jnp.maximum(1, jnp.floor(work * jnp.sum(real))).astype(jnp.int32)
    keep = jnp.cumsum(real) <= budget
    return batch_mask & keep[:, None]


def drops_out(key, probability: float):
    return jax.random.uniform(key) < probability


def poison_clients(data, fraction: float, seed: int):
    """Simulates corrupted clients: ``round(fraction * C)`` clients (fixed by ``seed``) get NaN
    features, so their updates are non-finite and the engine must exclude them.

    Returns ``(data, poisoned_ids)``; ``data`` is unchanged when ``fraction`` is 0.
    """
    count = round(fraction * data.num_clients)
    if count == 0:
        return data, np.zeros(0, np.int64)
    ids = np.sort(np.random.default_rng([seed, 7]).choice(data.num_clients, count, replace=False))
    x = np.array(data.x_train)
    for c in ids:
        x[data.client_indices[c, : data.num_examples[c]]] = np.nan
    return dataclasses.replace(data, x_train=x), ids
