"""DP-FedAvg: user-level differential privacy around any algorithm whose clients send an ``Update``.

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

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientTask, Dataset, FederatedAlgorithm, Update
from fedsim.errors import ConfigError

PyTree = Any


class ClippedUpdate(NamedTuple):
    """What a client sends under DP (weight 1): its clipped update; the engine sums them."""

    delta: PyTree  # the unweighted update clipped to norm C
    unclipped: jax.Array  # float32 1 when the update's norm was <= C (adaptive clipping's count)
    coverage: PyTree | None = None  # the unweighted mask, for mask-aware algorithms
    state: PyTree | None = None  # zeros: structure only, the server keeps its own statistics


def require_update(name: str, contribution) -> Update:
    """``contribution``, or ConfigError (one line) when it is not an ``Update``."""
    if not isinstance(contribution, Update):
        raise ConfigError(
            f"algorithm={name!r} under DP: its clients send {type(contribution).__name__}; "
            "DP-FedAvg wraps algorithms whose clients send an Update (fedsim.algorithms.base)"
        )
    return contribution


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


def check_wrappable(algorithm: FederatedAlgorithm, model_vars, dataset: Dataset) -> None:
    """ConfigError (one line) unless ``dp_fedavg`` can wrap ``algorithm``: a summed aggregate (not
    ``stacked``), uniformly sampled clients (no ``schedule``), no warm-up round (its upload would be
    neither privatised nor accounted) and clients that send an ``Update``, found by
    ``jax.eval_shape`` of one one-example local step (``model_vars``, ``dataset`` may be abstract)."""
    if algorithm.stacked:
        raise ConfigError(
            f"algorithm={algorithm.name!r} under DP: it aggregates every update itself (stacked), "
            "while DP-FedAvg noises their sum"
        )
    if algorithm.schedule is not None:
        raise ConfigError(
            f"algorithm={algorithm.name!r} under DP: it schedules its own clients "
            "(asynchronously), while the accountant assumes uniform sampling"
        )
    if algorithm.warmup is not None:
        raise ConfigError(
            f"algorithm={algorithm.name!r} under DP: its warm-up round "
            f"({algorithm.warmup.algorithm.name}) uploads without clipping or noise and is not "
            "accounted; run it without the warm-up"
        )
    server = jax.eval_shape(algorithm.server_init, model_vars)
    client = jax.eval_shape(algorithm.client_init, model_vars)
    task = ClientTask(
        batch_indices=jnp.zeros((1, 1), jnp.int32),
        batch_mask=jnp.ones((1, 1), bool),
        num_examples=jnp.int32(1),
        key=jax.random.PRNGKey(0),
        client_id=jnp.int32(0),
        val_indices=jnp.zeros((1,), jnp.int32),
        val_mask=jnp.ones((1,), bool),
        examples=jnp.zeros((1,), jnp.int32),
    )
    result = jax.eval_shape(algorithm.client_update, server, client, task, dataset)
    require_update(algorithm.name, result.contribution)


def clipped_client_update(
    algorithm: FederatedAlgorithm, server_state: DPServerState, client_state, task, dataset
):
    """``algorithm``'s client step with its ``Update`` unweighted and clipped to the current norm:
    the result carries a ``ClippedUpdate`` (zero state: the server keeps its own statistics)."""
    result = algorithm.client_update(server_state.inner, client_state, task, dataset)
    sent = require_update(algorithm.name, result.contribution)
    update = jax.tree.map(lambda d: d / sent.weight, sent.delta)
    clipped, norm = clip_by_norm(update, server_state.clip)
    private = ClippedUpdate(
        delta=clipped,
        unclipped=(norm <= server_state.clip).astype(jnp.float32),
        coverage=jax.tree.map(lambda c: c / sent.weight, sent.coverage),
        state=jax.tree.map(jnp.zeros_like, sent.state),
    )
    return result._replace(contribution=private)


def noisy_server_update(
    algorithm: FederatedAlgorithm,
    settings: DPSettings,
    server_state: DPServerState,
    total: ClippedUpdate,
):
    """Gaussian noise on the sum of clipped updates, ``algorithm``'s server step on the
    fixed-denominator mean, then (adaptive clipping) the clip norm moved by the noisy count."""
    update_std = settings.update_noise_multiplier
    denominator = jnp.float32(settings.expected_clients)
    key, noise_key, count_key = jax.random.split(server_state.key, 3)
    coverage = total.coverage
    if settings.fixed_mask:
        coverage = jax.tree.map(lambda c: jnp.full_like(c, denominator), coverage)
    kept = None
    if total.state is not None:
        kept = {name: server_state.model.state[name] for name in total.state}
    inner_total = Update(
        delta=add_gaussian_noise(total.delta, update_std * server_state.clip, noise_key),
        weight=denominator,
        coverage=coverage,
        state=jax.tree.map(lambda s: denominator * s, kept),
    )
    inner = algorithm.server_update(server_state.inner, inner_total)
    clip = server_state.clip
    if settings.target_quantile is not None:
        count = total.unclipped + settings.count_noise * jax.random.normal(count_key)
        below = count / denominator
        clip = clip * jnp.exp(-settings.clip_lr * (below - settings.target_quantile))
    return DPServerState(inner, clip, key)


def dp_fedavg(algorithm: FederatedAlgorithm, settings: DPSettings, seed: int) -> FederatedAlgorithm:
    """``algorithm`` with clipped client updates and a noisy fixed-denominator mean on the server.

    Built with ``algorithm._replace``: every hook it does not replace (``client_init``, ``warmup``) is
    the wrapped algorithm's, and ``personalize``/``submodels``/``report`` read ``server_state.inner``;
    ``report`` adds ``clip_norm``. Check ``check_wrappable`` first.

    >>> import optax
    >>> from fedsim.algorithms.fedavg import fedavg
    >>> from fedsim.models import get_model
    >>> private = dp_fedavg(fedavg(get_model("mlp", 10), optax.sgd(0.1)), DPSettings(1.0, 1.1, 10), 0)
    >>> private.name
    'fedavg+dp'
    """

    def server_init(model_vars):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 3)
        return DPServerState(algorithm.server_init(model_vars), jnp.float32(settings.clip), key)

    def unwrap(function):
        if function is None:
            return None
        return lambda server_state, *args: function(server_state.inner, *args)

    def report(server_state, scores):
        """The current clip norm and the wrapped algorithm's own metrics."""
        inner = unwrap(algorithm.report)
        return {
            "clip_norm": float(server_state.clip),
            **(inner(server_state, scores) if inner else {}),
        }

    return algorithm._replace(
        name=f"{algorithm.name}+dp",
        server_init=server_init,
        client_update=functools.partial(clipped_client_update, algorithm),
        server_update=functools.partial(noisy_server_update, algorithm, settings),
        personalize=unwrap(algorithm.personalize),
        submodels=unwrap(algorithm.submodels),
        report=report,
    )
