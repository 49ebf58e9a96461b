"""DP-FedAvg: user-level differential privacy around any algorithm that sends model updates.

McMahan et al. 2018, 'Learning Differentially Private Recurrent Language Models': every client's update
(what it transmits: the dense delta, the masked delta of a sparse client, the slots of Maestro factors
it trained) is clipped to L2 norm ``C``; the server adds Gaussian noise ``N(0, (z C)^2)`` to the sum of
clipped updates and divides by the expected number of clients (the fixed-denominator estimator, which
does not reveal how many clients took part). The noisy mean then goes through the wrapped algorithm's
own server step (plain averaging, FedAvgM/FedAdam's server optimiser, FedLTN's server momentum, Maestro's
shrinking), all inside the jitted round. Clients weigh 1 each, so one user moves the sum by at most ``C``.

Adaptive clipping (Andrew et al. 2021, 'Differentially Private Learning with Adaptive Clipping'): each
client also reports whether its update norm was ``<= C``; the server noises that count with standard
deviation ``sigma_b`` and moves ``C`` geometrically towards the ``target_quantile`` of update norms,
``C <- C exp(-eta (b - gamma))``. The update noise multiplier is then
``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` so that both releases together cost what noise ``z`` costs.

Sparse updates: the noise is added to every coordinate of the sum. With ``fixed_mask=False`` a masked
coordinate is averaged over the clients that kept it, so the server sees each coordinate's coverage in
the clear, which reveals the clients' masks (FedLTN/LotteryFL/Sub-FedAvg masks depend on the data;
Maestro's slots depend only on the client's capacity tier). With ``fixed_mask=True`` every coordinate is
divided by the expected number of clients, as dense coordinates are: the mask then only shapes the
clipped update and is covered by the guarantee, at the price of smaller steps on rarely kept weights.

Model state that is not trained by gradient (BatchNorm running statistics) is not aggregated under DP,
since it would be released without noise: the server keeps its own.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import FederatedAlgorithm

PyTree = Any

# Algorithms whose clients send ``{'delta', 'weight'}`` (+ optional 'coverage', 'state') contributions.
PRIVATIZABLE = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavg_ft",
    "ditto",
    "lotteryfl",
    "subfedavg",
    "fedltn",
    "maestro",
)
_CONTRIBUTION_KEYS = {"delta", "weight", "coverage", "state"}


class DPSettings(NamedTuple):
    """Static settings of the Gaussian mechanism (see the module docstring)."""

    clip: float  # initial clipping norm C
    noise_multiplier: float  # z of the whole round's release (updates and, if adaptive, the count)
    expected_clients: float  # the fixed denominator: K (fixed-size) or q N (Poisson sampling)
    fixed_mask: bool = False
    target_quantile: float | None = None  # adaptive clipping's gamma; None keeps C fixed
    clip_lr: float = 0.2  # adaptive clipping's eta
    count_noise: float = 0.0  # sigma_b, the standard deviation of the noise on the count

    @property
    def update_noise_multiplier(self) -> float:
        """``z`` for the updates: all of it, or what adaptive clipping's count leaves over."""
        if self.target_quantile is None or self.noise_multiplier == 0:
            return self.noise_multiplier
        return (self.noise_multiplier**-2 - (2 * self.count_noise) ** -2) ** -0.5


class DPServerState(NamedTuple):
    """The wrapped algorithm's server state plus the mechanism's own: current clip norm and key."""

    inner: PyTree
    clip: jax.Array  # float32 scalar
    key: jax.Array  # PRNG key for the server's noise, split every round

    @property
    def model(self):
        return self.inner.model


def clip_by_norm(tree, clip):
    """``tree * min(1, clip / ||tree||)`` and ``||tree||`` (global L2 norm over all leaves)."""
    norm = optax.tree.norm(tree)
    scale = jnp.minimum(1.0, clip / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
    return jax.tree.map(lambda leaf: leaf * scale, tree), norm


def add_gaussian_noise(tree, std, key):
    """Every leaf plus independent ``N(0, std^2)`` noise (one key per leaf)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    noisy = [
        leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=False)
    ]
    return jax.tree.unflatten(treedef, noisy)


def dp_fedavg(algorithm: FederatedAlgorithm, settings: DPSettings, seed: int) -> FederatedAlgorithm:
    """``algorithm`` with clipped client updates and a noisy fixed-denominator mean on the server.

    >>> import optax
    >>> from fedsim.algorithms.fedavg import fedavg
    >>> from fedsim.models import get_model
    >>> private = dp_fedavg(fedavg(get_model("mlp", 10), optax.sgd(0.1)), DPSettings(1.0, 1.1, 10), 0)
    >>> private.name
    'fedavg+dp'
    """
    update_std = settings.update_noise_multiplier
    denominator = jnp.float32(settings.expected_clients)

    def server_init(model_vars):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 3)
        return DPServerState(algorithm.server_init(model_vars), jnp.float32(settings.clip), key)

    def client_update(server_state, client_state, task, dataset):
        result = algorithm.client_update(server_state.inner, client_state, task, dataset)
        contribution = result.contribution
        unknown = set(contribution) - _CONTRIBUTION_KEYS
        if "delta" not in contribution or unknown:
            raise TypeError(
                f"DP-FedAvg wraps algorithms that send model updates; {algorithm.name} sends "
                f"{sorted(contribution)}"
            )
        weight = contribution["weight"]
        update = jax.tree.map(lambda d: d / weight, contribution["delta"])
        clipped, norm = clip_by_norm(update, server_state.clip)
        private = {
            "delta": clipped,
            "unclipped": (norm <= server_state.clip).astype(jnp.float32),
        }
        if "coverage" in contribution:
            private["coverage"] = jax.tree.map(lambda c: c / weight, contribution["coverage"])
        if "state" in contribution:  # structure only: the server keeps its own statistics
            private["state"] = jax.tree.map(jnp.zeros_like, contribution["state"])
        return result._replace(contribution=private)

    def server_update(server_state, total):
        key, noise_key, count_key = jax.random.split(server_state.key, 3)
        inner_total = {
            "delta": add_gaussian_noise(total["delta"], update_std * server_state.clip, noise_key),
            "weight": denominator,
        }
        if "coverage" in total:
            inner_total["coverage"] = (
                jax.tree.map(lambda c: jnp.full_like(c, denominator), total["coverage"])
                if settings.fixed_mask
                else total["coverage"]
            )
        if "state" in total:
            kept = {name: server_state.model.state[name] for name in total["state"]}
            inner_total["state"] = jax.tree.map(lambda s: denominator * s, kept)
        inner = algorithm.server_update(server_state.inner, inner_total)
        clip = server_state.clip
        if settings.target_quantile is not None:
            count = total["unclipped"] + settings.count_noise * jax.random.normal(count_key)
            below = count / denominator
            clip = clip * jnp.exp(-settings.clip_lr * (below - settings.target_quantile))
        return DPServerState(inner, clip, key)

    def unwrap(function):
        if function is None:
            return None
        return lambda server_state, *args: function(server_state.inner, *args)

    return FederatedAlgorithm(
        f"{algorithm.name}+dp",
        server_init,
        algorithm.client_init,
        client_update,
        server_update,
        unwrap(algorithm.personalize),
        unwrap(algorithm.submodels),
    )
