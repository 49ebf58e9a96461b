"""Simulated client faults inside the jitted round (pure functions of keys and arrays).

- Dropout: each sampled client drops out with probability ``dropout_prob`` per round; it downloads
  the model but uploads nothing, and the aggregate is renormalised over the survivors.
- Stragglers: a fixed ``straggler_fraction`` of the population (chosen once from the seed) finishes
  only ``straggler_work`` of its real local steps every round it is sampled.
- Latency (simulated wall-clock): a job client ``c`` starts in round ``r`` takes
  ``exp(latency_sigma z_c + latency_jitter e_cr)`` time units (the median client's job is 1), with
  ``z_c`` fixed per client by the seed and ``e_cr`` drawn per job, times ``straggler_slowdown *
  straggler_work`` for a straggler (slower steps, that share of them). A synchronous round lasts as
  long as its slowest sampled client; an asynchronous algorithm (FedBuff) schedules its jobs with
  these durations itself. Durations never change what a client computes.
- Poisoned clients (host side, before the run): a fixed fraction whose features are NaN.
- Attackers (Byzantine clients): a fixed fraction (chosen once from the seed, on the host) whose upload
  is transformed before aggregation: ``sign_flip`` sends ``-s delta``, ``scale`` sends ``s delta``
  (the boosting of Bhagoji et al. 2019, 'Analyzing Federated Learning through an Adversarial Lens'),
  ``noise`` replaces the update with ``N(0, sigma^2)`` per coordinate (the Gaussian attack of Blanchard
  et al. 2017), and ``label_flip`` (host side) trains on labels ``K - 1 - y`` (Fung, Yoon, Beschastnikh
  2020, 'The Limitations of Federated Learning in Sybil Settings'). The transform acts on the
  contribution's ``delta`` (an ``Update``: the weighted ``n_k (w_k - w)``, so the noise is weighted too).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.errors import ConfigError

ATTACKS = ("none", "sign_flip", "scale", "noise", "label_flip")
UPLOAD_ATTACKS = ("sign_flip", "scale", "noise")


class Faults(NamedTuple):
    dropout_prob: float = 0.0
    straggler_fraction: float = 0.0
    straggler_work: float = 1.0
    attack: str = "none"  # one of ATTACKS
    attackers: tuple[int, ...] = ()  # the malicious clients' ids (``choose_clients``)
    attack_scale: float = 1.0  # s of sign_flip and scale
    attack_noise: float = 1.0  # sigma of noise
    latency_sigma: float = 0.0  # spread (log-sd) of the clients' typical job durations
    latency_jitter: float = 0.0  # spread (log-sd) of one job's duration around its client's
    straggler_slowdown: float = 1.0  # a straggler's local steps take this many times as long

    @property
    def active(self) -> bool:
        return self.dropout_prob > 0 or (self.straggler_fraction > 0 and self.straggler_work < 1)

    @property
    def attacks(self) -> bool:
        """Whether attackers transform their uploads in the round."""
        return self.attack in UPLOAD_ATTACKS and len(self.attackers) > 0


NO_FAULTS = Faults()


def is_straggler(key, client_id, num_clients: int, fraction: float):
    """Whether ``client_id`` is one of the ``round(fraction * C)`` stragglers fixed by ``key``."""
    rank = jax.random.permutation(key, num_clients)[client_id]
    return rank < round(fraction * num_clients)


def job_durations(faults: Faults, fixed_key, job_key, num_clients: int):
    """``[C]`` float32: the simulated time a job that client ``c`` starts now takes, from the
    experiment's ``fixed_key`` (each client's typical duration, the stragglers) and ``job_key``."""
    clients = jnp.arange(num_clients)
    typical = jax.random.normal(jax.random.fold_in(fixed_key, 1), (num_clients,))
    jitter = jax.random.normal(job_key, (num_clients,))
    spread = faults.latency_sigma * typical + faults.latency_jitter * jitter
    straggles = is_straggler(fixed_key, clients, num_clients, faults.straggler_fraction)
    slowdown = jnp.where(straggles, faults.straggler_slowdown * faults.straggler_work, 1.0)
    return (jnp.exp(spread) * slowdown).astype(jnp.float32)


def truncate_work(batch_mask, work: float):
    """Keeps the first ``max(1, floor(work * real_steps))`` steps that have data."""
    real = jnp.any(batch_mask, axis=1)
    budget = jnp.maximum(1, jnp.floor(work * jnp.sum(real))).astype(jnp.int32)
    keep = jnp.cumsum(real) <= budget
    return batch_mask & keep[:, None]


def drops_out(key, probability: float):
    return jax.random.uniform(key) < probability


def attack(faults: Faults, contribution, client_id, key):
    """``contribution`` with its ``delta`` transformed by ``faults.attack`` when ``client_id`` is
    one of ``faults.attackers`` (``key``: the client's round key, for the noise)."""
    if not hasattr(contribution, "delta"):
        raise ConfigError(
            f"attack={faults.attack!r}: the clients send {type(contribution).__name__}, which has "
            "no delta to attack"
        )
    malicious = jnp.isin(client_id, jnp.asarray(faults.attackers))
    delta = contribution.delta
    if faults.attack == "noise":
        weight = getattr(contribution, "weight", 1.0)
        leaves, treedef = jax.tree.flatten(delta)
        keys = jax.random.split(key, len(leaves))
        noise = [
            weight * faults.attack_noise * jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ]
        sent = jax.tree.unflatten(treedef, noise)
    else:
        scale = faults.attack_scale * (-1 if faults.attack == "sign_flip" else 1)
        sent = jax.tree.map(lambda d: scale * d, delta)
    attacked = jax.tree.map(lambda a, d: jnp.where(malicious, a, d), sent, delta)
    return contribution._replace(delta=attacked)


def choose_clients(num_clients: int, fraction: float, seed: int, stream: int) -> np.ndarray:
    """The sorted ids of ``round(fraction * C)`` clients drawn once from ``(seed, stream)``."""
    count = round(fraction * num_clients)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(num_clients, count, replace=False))


def flip_labels(data, attackers: np.ndarray):
    """Label flipping: the ``attackers``' training labels become ``K - 1 - y`` (their label
    histograms reversed to match)."""
    y, histogram = np.array(data.y_train), np.array(data.label_histogram)
    for c in attackers:
        idx = data.client_indices[c, : data.num_examples[c]]
        y[idx] = data.num_classes - 1 - data.y_train[idx]
        histogram[c] = histogram[c, ::-1]
    return dataclasses.replace(data, y_train=y, label_histogram=histogram)


def poison_clients(data, fraction: float, seed: int):
    """Simulates corrupted clients: ``round(fraction * C)`` clients (fixed by ``seed``) get NaN
    features, so their updates are non-finite and the engine must exclude them.

    Returns ``(data, poisoned_ids)``; ``data`` is unchanged when ``fraction`` is 0.
    """
    ids = choose_clients(data.num_clients, fraction, seed, 7)
    if len(ids) == 0:
        return data, ids
    x = np.array(data.x_train)
    for c in ids:
        x[data.client_indices[c, : data.num_examples[c]]] = np.nan
    return dataclasses.replace(data, x_train=x), ids
