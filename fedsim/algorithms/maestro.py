"""Maestro: Horváth, Laskaridis, Rajput, Wang, 'Maestro: Uncovering Low-Rank Structures via Trainable
Decomposition', ICML 2024, centrally and federated, with FjORD's capacity tiers (Horváth et al.,
'FjORD: Fair and Accurate Federated Learning under Heterogeneous Targets with Ordered Dropout', NeurIPS
2021), following the official code (github.com/SamuelHorvath/Maestro-LoD).

The model's Conv/Dense layers are factorised ``U Vᵀ`` (``model_kwargs.factorized``); the kept ranks are
server state (``state['ranks']``). Client ``k`` has capacity ``p = tiers[k % len(tiers)]`` and trains
the rank prefixes ``cap_l = ceil(p r_l)`` of every layer: each local step truncates one layer ``l``
(``P(l) ∝ cap_l``) to ``b ~ U{1..cap_l}`` (ordered dropout), adds ``lambda_gl`` times the hierarchical
group lasso over all ``R`` slots (official code), applies coupled weight decay, and never moves a slot ``>= cap``. The
server averages every slot over the clients that trained it, weighted by examples (shell-wise,
FjORD's nested aggregation; slots nobody trained keep their value), and every ``shrink_every`` rounds
cuts each layer's dead tail (importance ``s_b`` below ``epsilon`` times the layer's largest, or
below ``epsilon``: ``cut``). Centrally: one client holding all the data, one tier,
a round per epoch, shrinking every round — Maestro's per-epoch schedule.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import masked, norm_stats
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Personal, Submodel, Update
from fedsim.algorithms.local import local_train, masked_cross_entropy
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup, check_choice, check_ranges
from fedsim.compress import lowrank, masks
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars
from fedsim.models.layers import RANKS


class ServerState(NamedTuple):
    model: ModelVars  # factors and dense leaves; the kept ranks r_l in model.state['ranks']
    round: jax.Array  # int32 rounds completed


class Settings(NamedTuple):
    """Maestro's hyper-parameters (see ``maestro``)."""

    lambda_gl: float
    epsilon: float
    cut: str
    weight_decay: float
    tiers: tuple[float, ...]
    shrink_every: int
    ordered_dropout: bool
    recalibrate_bn: bool
    keep_optimizer_state: bool


def server_init(model_vars) -> ServerState:
    return ServerState(model_vars, jnp.int32(0))


def client_init(optimizer, settings: Settings, model_vars):
    """A client's persistent state: its optimiser state when it keeps one, else nothing."""
    return optimizer.init(model_vars.params) if settings.keep_optimizer_state else ()


def caps_of(server_state, fraction):
    """Per layer ``ceil(fraction r_l)`` of the kept ranks."""
    return lowrank.tier_caps(lowrank.rank_vector(server_state.model.state), fraction)


def client_caps(server_state, tiers: tuple[float, ...], task):
    """The caps of client ``k``'s tier ``tiers[k % len(tiers)]``."""
    tier_array = jnp.asarray(tiers, jnp.float32)
    return caps_of(server_state, tier_array[task.client_id % tier_array.shape[0]])


def transfer_bytes(model_vars: ModelVars, caps):
    """One direction: the factors' slots ``< cap``, every other parameter, the shared state."""
    return lowrank.traffic_bytes(model_vars.params, caps) + lowrank.state_bytes(model_vars.state)


def local_loss(model: Model, caps, settings: Settings):
    """The local objective: cross-entropy at sampled ranks ``b <= cap`` (ordered dropout) plus
    ``lambda_gl`` times the group lasso over all ``R`` slots (official code). Slots ``>= cap`` are
    frozen, so they enter as constants (a client needs only their norms, two floats a slot)."""

    def loss_fn(params, state, x, y, mask, key):
        ranks = caps
        if settings.ordered_dropout:
            ranks = lowrank.sample_ranks(jax.random.fold_in(key, 1), caps)
        logits, new_state = model.apply(
            lowrank.at_ranks(ModelVars(params, state), ranks), x, True, key, mask
        )
        loss = masked_cross_entropy(logits, y, mask)
        loss += settings.lambda_gl * lowrank.group_lasso(params)
        return loss, lowrank.with_rank_vector(new_state, caps)

    return loss_fn


def client_update(
    model: Model, optimizer, settings: Settings, server_state, client_state, task, dataset
):
    """Local training of the client's tier's slots; it sends their masked ``Update`` (shell-wise)."""
    caps = client_caps(server_state, settings.tiers, task)
    start = lowrank.at_ranks(server_state.model, caps)
    own_slots = lowrank.slot_masks(start.params, caps)

    def decay_own_slots(params, grads):
        grads = jax.tree.map(lambda g, p: g + settings.weight_decay * p, grads, params)
        return masks.apply_mask(grads, own_slots)

    loss_fn = local_loss(model, caps, settings)
    kept = client_state if settings.keep_optimizer_state else None
    result = local_train(model, optimizer, start, task, dataset, decay_own_slots, loss_fn, kept)
    trained = result.model
    if settings.recalibrate_bn:
        trained = norm_stats.reestimate(model, trained, task, dataset)
    shared = ModelVars(trained.params, lowrank.without_ranks(trained.state))
    weight = task.num_examples.astype(jnp.float32)
    traffic = transfer_bytes(trained, caps)
    return ClientResult(
        contribution=masked.masked_model_contribution(
            shared, server_state.model.params, own_slots, weight
        ),
        client_state=result.opt_state if settings.keep_optimizer_state else (),
        loss=result.loss,
        up_bytes=traffic,
        down_bytes=traffic,
    )


def server_update(server_state, total: Update, *, epsilon: float, cut: str, shrink_every: int):
    """Slot-wise mean over the clients that trained each slot; every ``shrink_every`` rounds each
    layer's rank is cut to its live slots (``lowrank.shrunk_ranks`` with ``epsilon`` and ``cut``)."""
    current = server_state.model
    average = masked.masked_server_model(
        total, ModelVars(current.params, lowrank.without_ranks(current.state))
    )
    rounds = server_state.round + 1
    ranks = lowrank.rank_vector(current.state)
    if shrink_every:
        shrunk = jnp.minimum(ranks, lowrank.shrunk_ranks(average.params, epsilon, cut))
        ranks = jnp.where(rounds % shrink_every == 0, shrunk, ranks)
    state = lowrank.with_rank_vector({**average.state, RANKS: current.state[RANKS]}, ranks)
    return ServerState(ModelVars(average.params, state), rounds)


def personalize(tiers: tuple[float, ...], server_state, client_state, task, dataset) -> Personal:
    """The server model at the client's tier's ranks."""
    deployed = lowrank.at_ranks(server_state.model, client_caps(server_state, tiers, task))
    params, size = lowrank.deployed_size(deployed)
    density = params / lowrank.dense_params(deployed.params)
    return Personal(deployed, size, size, density)


def submodels(model: Model, tiers: tuple[float, ...], server_state, sample_x) -> dict:
    """``p<P>``: the server model at each tier's ranks, with its size, traffic and MACs."""
    out = {}
    for fraction in tiers:
        caps = caps_of(server_state, fraction)
        sub = lowrank.at_ranks(server_state.model, caps)
        params, size = lowrank.deployed_size(sub)
        round_bytes = 2 * transfer_bytes(sub, caps)
        macs = model.macs(sub, sample_x)
        out[f"p{round(100 * fraction)}"] = Submodel(sub, params, size, round_bytes, macs)
    return out


def maestro(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    *,
    lambda_gl: float = 1e-6,
    epsilon: float = 1e-3,
    cut: str = "relative",
    weight_decay: float = 1e-4,
    tiers: tuple[float, ...] = (1.0,),
    shrink_every: int = 1,
    ordered_dropout: bool = True,
    recalibrate_bn: bool = True,
    keep_optimizer_state: bool = False,
    name: str = "maestro",
) -> FederatedAlgorithm:
    """Maestro with the official code's ``lambda_gl`` 1e-6 and decay 1e-4. Shrinking cuts the slots
    below ``epsilon`` times the layer's largest importance (``cut='relative'``, which shrinks at any
    ``lambda_gl``), or below ``epsilon`` (``cut='absolute'``: the official rule at ``epsilon`` 1e-5).

    ``shrink_every=0`` never cuts ranks and ``ordered_dropout=False`` always trains every kept slot
    (with ``lambda_gl=0`` that fine-tunes fixed-rank factors: the truncated-SVD baseline).
    ``recalibrate_bn`` re-estimates the BatchNorm statistics of the trained model on the client's
    examples (``norm_stats.reestimate``; config key ``reestimate_bn``). ``keep_optimizer_state``
    carries each client's optimiser state across rounds (its client state; centrally: one optimiser
    for the whole run, as in the official code).

    >>> import optax
    >>> from fedsim.models import get_model
    >>> algorithm = maestro(get_model("mlp", 10, factorized=True), optax.sgd(0.1))
    >>> algorithm.name
    'maestro'
    """
    tiers = tuple(tiers)
    settings = Settings(
        lambda_gl, epsilon, cut, weight_decay, tiers, shrink_every, ordered_dropout,
        recalibrate_bn, keep_optimizer_state,
    )  # fmt: skip
    return FederatedAlgorithm(
        name,
        server_init,
        functools.partial(client_init, client_optimizer, settings),
        functools.partial(client_update, model, client_optimizer, settings),
        functools.partial(server_update, epsilon=epsilon, cut=cut, shrink_every=shrink_every),
        functools.partial(personalize, tiers),
        functools.partial(submodels, model, tiers),
    )


def _build(hp: dict, setup: ClientSetup) -> FederatedAlgorithm:
    return maestro(
        setup.model,
        setup.optimizer,
        lambda_gl=hp["lambda_gl"],
        epsilon=hp["epsilon_ps"],
        cut=hp["cut"],
        weight_decay=hp["weight_decay"],
        tiers=tuple(hp["rank_tiers"]),
        shrink_every=hp["shrink_every"],
        ordered_dropout=hp["ordered_dropout"],
        recalibrate_bn=setup.reestimate_bn,
        keep_optimizer_state=setup.keep_optimizer_state,
    )


def _check(hp: dict) -> None:
    check_ranges(
        hp, "maestro", lambda_gl=">=0", epsilon_ps=">=0", weight_decay=">=0", shrink_every=">=0"
    )
    check_choice(hp, "maestro", "cut", lowrank.CUTS)
    if not hp["rank_tiers"] or not all(0 < p <= 1 for p in hp["rank_tiers"]):
        raise ConfigError(
            f"maestro.rank_tiers={tuple(hp['rank_tiers'])}: give one or more fractions in (0, 1]"
        )


SPEC = AlgorithmSpec(
    "maestro",
    _build,
    hparams={
        "lambda_gl": 1e-6,  # hierarchical group lasso strength
        # progressive shrinking (Maestro): a layer's tail of slots b with importance
        # s_b = ||u_b:|| ||v_b:|| below epsilon_ps x s_1 (its largest importance) is cut ('relative',
        # at any scale and lambda), or below epsilon_ps itself ('absolute': the official rule, 1e-5)
        "cut": "relative",
        "epsilon_ps": 1e-3,
        "weight_decay": 1e-4,  # coupled weight decay on the client's own slots
        "shrink_every": 1,  # rounds between shrinking steps (0 = never)
        "ordered_dropout": True,  # per-layer rank sampling; False trains every kept slot
        "rank_tiers": (1.0,),  # FjORD tiers: client k trains ceil(p r) slots, p = tiers[k % T]
    },
    traceable=("lambda_gl", "weight_decay"),
    check=_check,
    factorized=True,
    keeps_optimizer_state=True,
)
