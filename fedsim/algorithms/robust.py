"""Byzantine-robust FedAvg: clients train as in FedAvg; the server aggregates the round's updates with
a robust rule instead of their weighted mean, then takes the server optimiser's step on
``-aggregate`` (plain SGD at 1 by default: the aggregate is the step).

The rules see every update (the engine hands over the stacked ``[S, ...]`` contributions with a
validity mask, ``FederatedAlgorithm.stacked``) and count only the valid rows:

- ``median``: the coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, 'Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates', ICML 2018).
- ``trimmed``: the coordinate-wise trimmed mean (Yin et al. 2018): per coordinate the
  ``floor(beta n)`` largest and smallest values are dropped and the rest averaged.
- ``krum``: Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, 'Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent', NeurIPS 2017): each update is scored by the summed
  squared distances to its ``n - f - 2`` nearest others, and the mean of the ``m`` best-scored ones is
  the aggregate (``m = 1``: Krum).
- ``normbound``: norm bounding (Sun, Kairouz, Suresh, McMahan, 'Can You Really Backdoor Federated
  Learning?', 2019): every update is clipped to L2 norm ``M``, then averaged as FedAvg does.

Median, trimmed mean and Krum act on the unweighted updates ``w_k - w`` (each client one vote); norm
bounding keeps FedAvg's weights ``n_k``. Non-trainable model state (BatchNorm statistics) is averaged
as in FedAvg.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import FederatedAlgorithm, PyTree, Stacked, Update
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.errors import ConfigError
from fedsim.models.base import Model

Rule = Callable[
    [PyTree, jax.Array, jax.Array], PyTree
]  # (deltas [S, ...], weights, valid) -> delta


def _rows(mask, leaf):
    """``mask`` ``[S]`` broadcast against ``leaf`` ``[S, ...]``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _sorted_valid(leaf, valid):
    """``leaf`` sorted along the client axis, the invalid rows (as ``+inf``) last."""
    return jnp.sort(jnp.where(_rows(valid, leaf), leaf, jnp.inf), axis=0)


def _weighted_mean(deltas, weights):
    """``sum_k weights_k deltas_k / sum_k weights_k``."""
    total = jnp.sum(weights)
    return jax.tree.map(lambda d: jnp.sum(_rows(weights, d) * d, axis=0) / total, deltas)


def median(deltas, weights, valid):
    """The coordinate-wise median of the valid rows (the mean of the two middle ones for even n)."""
    n = jnp.maximum(jnp.sum(valid), 1)

    def one(leaf):
        ordered = _sorted_valid(leaf, valid)
        return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2

    return jax.tree.map(one, deltas)


def trimmed_mean(beta) -> Rule:
    """The coordinate-wise mean of the valid rows without their ``floor(beta n)`` largest and
    smallest values (``beta < 1/2``)."""

    def rule(deltas, weights, valid):
        n = jnp.sum(valid)
        cut = jnp.floor(beta * n)
        rank = jnp.arange(valid.shape[0])
        kept = (rank >= cut) & (rank < n - cut)
        count = jnp.maximum(n - 2 * cut, 1)

        def one(leaf):
            ordered = _sorted_valid(leaf, valid)
            return jnp.sum(jnp.where(_rows(kept, ordered), ordered, 0), axis=0) / count

        return jax.tree.map(one, deltas)

    return rule


def krum_scores(deltas, valid, byzantine: int):
    """Each valid row's summed squared distance to its ``max(n - f - 2, 0)`` nearest other valid
    rows; ``+inf`` for invalid rows."""
    slots = valid.shape[0]
    flat = [leaf.reshape(slots, -1) for leaf in jax.tree.leaves(deltas)]
    sq = sum(jnp.sum(f * f, axis=1) for f in flat)
    gram = sum(f @ f.T for f in flat)
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0)
    others = valid[None, :] & ~jnp.eye(slots, dtype=bool)
    nearest = jnp.sort(jnp.where(others, dist, jnp.inf), axis=1)
    neighbours = jnp.maximum(jnp.sum(valid) - byzantine - 2, 0)
    score = jnp.sum(jnp.where(jnp.arange(slots) < neighbours, nearest, 0), axis=1)
    return jnp.where(valid, score, jnp.inf)


def krum(byzantine: int, multi: int) -> Rule:
    """Multi-Krum: the mean of the ``min(m, n)`` valid rows with the lowest Krum scores."""

    def rule(deltas, weights, valid):
        order = jnp.argsort(krum_scores(deltas, valid, byzantine))
        best = jnp.arange(valid.shape[0]) < jnp.minimum(multi, jnp.sum(valid))
        chosen = jnp.zeros(valid.shape, jnp.float32).at[order].set(best.astype(jnp.float32))
        return _weighted_mean(deltas, chosen)

    return rule


def norm_bound(max_norm) -> Rule:
    """FedAvg's weighted mean of the rows each clipped to L2 norm ``max_norm``."""

    def rule(deltas, weights, valid):
        leaves = jax.tree.leaves(deltas)
        norm = jnp.sqrt(
            sum(jnp.sum(leaf.reshape(valid.shape[0], -1) ** 2, axis=1) for leaf in leaves)
        )
        factor = jnp.minimum(1.0, max_norm / jnp.where(norm > 0, norm, 1.0))
        clipped = jax.tree.map(lambda d: _rows(factor, d) * d, deltas)
        return _weighted_mean(clipped, weights)

    return rule


def robust_fedavg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    rule: Rule,
    server_optimizer: optax.GradientTransformation | None = None,
    name: str = "fedavg_robust",
) -> FederatedAlgorithm:
    """FedAvg whose server aggregates the stacked client updates with ``rule``.

    >>> import optax
    >>> from fedsim.models import get_model
    >>> robust_fedavg(get_model("mlp", 10), optax.sgd(0.1), median).stacked
    True
    """
    base = fedavg(model, client_optimizer, server_optimizer, name=name)

    def server_update(server_state, stacked: Stacked):
        sent = stacked.contributions
        weights = sent.weight  # zero on invalid rows
        own = jnp.where(stacked.valid, weights, 1.0)
        deltas = jax.tree.map(lambda d: d / _rows(own, d), sent.delta)
        delta = rule(deltas, weights, stacked.valid)
        state = jax.tree.map(lambda s: jnp.sum(s, axis=0) / jnp.sum(weights), sent.state)
        return base.server_update(server_state, Update(delta, jnp.float32(1), state=state))

    return base._replace(server_update=server_update, stacked=True)


def _check_krum(hp: dict) -> None:
    for key, low in (("byzantine", 0), ("multi", 1)):
        value = hp[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"fedavg_krum.{key}={value} must be an integer >= {low}")


def _krum_sizes(hp: dict, clients: int) -> tuple[int, int]:
    """``(f, m)`` once Krum's guarantee holds for the ``clients`` sampled a round: ``n >= 2f + 3``
    (Blanchard et al. 2017, Proposition 1) and ``m <= n``."""
    byzantine, multi = hp["byzantine"], hp["multi"]
    if clients < 2 * byzantine + 3:
        raise ConfigError(
            f"fedavg_krum.byzantine={byzantine} with {clients} clients a round: Krum needs "
            f"clients_per_round >= 2 byzantine + 3 = {2 * byzantine + 3}"
        )
    if multi > clients:
        raise ConfigError(f"fedavg_krum.multi={multi} exceeds the {clients} clients a round")
    return byzantine, multi


def _spec(name: str, hparams: dict, traceable: tuple, make_rule, check=None) -> AlgorithmSpec:
    def build(hp: dict, setup) -> FederatedAlgorithm:
        server = server_optimizer(hp)
        return robust_fedavg(setup.model, setup.optimizer, make_rule(hp, setup), server, name)

    def check_all(hp: dict) -> None:
        check_ranges(hp, name, server_lr=">0")
        if check is not None:
            check(hp)

    return AlgorithmSpec(
        name, build, {**SERVER_SGD, **hparams}, ("server_lr", *traceable), check_all
    )


MEDIAN = _spec("fedavg_median", {}, (), lambda hp, setup: median)

TRIMMED = _spec(
    "fedavg_trimmed",
    {
        "beta": 0.1,  # trimmed fraction: floor(beta n) largest and smallest values cut per coordinate
    },
    ("beta",),
    lambda hp, setup: trimmed_mean(hp["beta"]),
    lambda hp: check_ranges(hp, "fedavg_trimmed", beta="[0,0.5)"),
)

KRUM = _spec(
    "fedavg_krum",
    {
        "byzantine": 0,  # f: the Byzantine clients Krum tolerates (n - f - 2 neighbours; n >= 2f + 3)
        "multi": 1,  # m: Multi-Krum averages the m best-scored updates (1: Krum)
    },
    (),
    lambda hp, setup: krum(*_krum_sizes(hp, setup.clients_per_round)),
    _check_krum,
)

NORMBOUND = _spec(
    "fedavg_normbound",
    {
        "max_norm": 1.0,  # M: every client update (w_k - w) is clipped to this L2 norm
    },
    ("max_norm",),
    lambda hp, setup: norm_bound(hp["max_norm"]),
    lambda hp: check_ranges(hp, "fedavg_normbound", max_norm=">0"),
)
