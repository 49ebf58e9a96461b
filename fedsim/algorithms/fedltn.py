"""FedLTN: Mugunthan, Lin, Gokul, Lau, Kagal, Pieper, 'FedLTN: Federated Learning for Sparse and
Personalized Lottery Ticket Networks', ECCV 2022.

Each client trains its masked model, re-measures its BatchNorm statistics on its own examples
(``norm_stats``; key ``reestimate_bn``), then, once its local validation accuracy clears
``prune_threshold`` and beats the validation split's majority-class rate (so a constant predictor never
prunes), prunes ``min(prune_rate, 1 - target/density)`` of its surviving weights by trained
magnitude with no rewinding. Normalisation layers (parameters and statistics) stay personal (FedBN).
The server averages every coordinate over the clients whose mask keeps it and applies momentum
(FedAvgM form) only where some client covered the coordinate, so weights nobody trains do not drift.

Lean start: with ``density_budgets`` (e.g. ``(1.0, 0.5, 0.25)``), client ``k`` gets tier
``budgets[k % len(budgets)]`` and, at its first participation, one-shot prunes the received server model
to that density before training, so it never stores or moves more than its budget. Its ``report`` gives
each tier's ``personal_acc_b<P>``, ``model_mb_b<P>`` and ``density_b<P>``.

Jump-Start (the paper's warm start): with ``jump_start_rounds`` ``J > 0`` every client first runs ``J`` local-only
virtual rounds from the initial model (train, then prune under the same gate; nothing is sent), then
uploads its masked model once, and the server starts round 1 from the mask-aware mean with zero
momentum. The engine runs it as a ``Warmup`` round with every client taking part.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.algorithms import masked, norm_stats
from fedsim.algorithms.base import (
    ClientResult,
    FederatedAlgorithm,
    PersonalScores,
    Update,
    Warmup,
)
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup, check_ranges
from fedsim.compress import masks, pruning
from fedsim.compress.encode import masked_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars  # w_g; its normalisation leaves/statistics: the round's mean (global_acc only)
    momentum: optax.Params  # v, shaped like the params


class ClientState(NamedTuple):
    mask: optax.Params  # bool per prunable coordinate (scalar True for other leaves)
    params: optax.Params  # W_k: the last local weights, personal normalisation included
    state: optax.Params  # personal BatchNorm statistics
    joined: jax.Array  # bool: has taken part in a round (lean start applies once)


class Pruning(NamedTuple):
    """Steps 3-4's rule: prune ``min(prune_rate, 1 - target/density)`` once validation clears the gate."""

    target_density: float
    prune_rate: float
    prune_threshold: float
    scope: str


def server_init(model_vars) -> ServerState:
    return ServerState(model_vars, jax.tree.map(jnp.zeros_like, model_vars.params))


def client_init(model_vars) -> ClientState:
    params = model_vars.params
    return ClientState(masks.init_mask(params), params, model_vars.state, jnp.bool_(False))


def download(server_params, own: ClientState):
    """Server weights, with this client's own normalisation leaves."""
    return jax.tree.map(
        lambda is_norm, w, mine: mine if is_norm else w,
        masks.norm_flags(server_params),
        server_params,
        own.params,
    )


def entry_mask(received, own: ClientState, task, budgets: tuple[float, ...], scope: str):
    """The client's mask, lean-started to its density budget at its first participation."""
    if not budgets:
        return own.mask
    tiers = jnp.asarray(budgets, jnp.float32)
    lean = pruning.prune_to_density(received, own.mask, tiers[task.client_id % len(budgets)], scope)
    return jax.tree.map(lambda a, b: jnp.where(own.joined, a, b), own.mask, lean)


def train_and_prune(
    model: Model, optimizer, rule: Pruning, refresh, start: ModelVars, mask, task, dataset
):
    """Steps 3-4: masked local training, BatchNorm statistics re-measured (``refresh``), then pruning
    without rewinding when the validation gate passes. Returns ``(trained ModelVars, new mask,
    loss)``."""
    result = masked.masked_local_train(model, optimizer, start, mask, task, dataset)
    trained = refresh(result.model, task, dataset)
    current = masks.density(mask, trained.params)
    passes = masked.validation_gate(model, trained, task, dataset, rule.prune_threshold)
    prune = passes & (current > rule.target_density)
    rate = jnp.clip(1.0 - rule.target_density / current, 0.0, rule.prune_rate)
    pruned = pruning.magnitude_prune(trained.params, mask, rate, rule.scope)
    new_mask = jax.tree.map(lambda p, m: jnp.where(prune, p, m), pruned, mask)
    params = masks.apply_mask(trained.params, new_mask)
    return trained._replace(params=params), new_mask, result.loss


def upload(server_state, trained: ModelVars, new_mask, task, loss, down_bytes, by_examples: bool):
    """What the client sends (its masked ``Update`` with coverage) and keeps."""
    weight = masked.aggregation_weight(task, by_examples)
    return ClientResult(
        contribution=masked.masked_model_contribution(
            trained, server_state.model.params, new_mask, weight
        ),
        client_state=ClientState(new_mask, trained.params, trained.state, jnp.bool_(True)),
        loss=loss,
        up_bytes=masked_bytes(trained.params, new_mask, skip_norm=True),
        down_bytes=down_bytes,
    )


def server_update(server_state, total: Update, *, server_lr: float, server_momentum: float):
    """Mask-aware mean, then FedAvgM's momentum step only on covered, non-normalisation weights."""
    current = server_state.model.params
    average = masked.masked_server_model(total, server_state.model)
    flags = masks.norm_flags(current)

    def momentum_step(is_norm, w, v, avg, coverage):
        return v if is_norm else jnp.where(coverage > 0, server_momentum * v + (w - avg), v)

    def param_step(is_norm, w, v, avg, coverage):
        # personal normalisation: the mean is kept for global_acc only, no momentum
        return avg if is_norm else jnp.where(coverage > 0, w - server_lr * v, w)

    leaves = (current, server_state.momentum, average.params, total.coverage)
    momentum = jax.tree.map(momentum_step, flags, *leaves)
    leaves = (current, momentum, average.params, total.coverage)
    params = jax.tree.map(param_step, flags, *leaves)
    return ServerState(average._replace(params=params), momentum)


def jump_start(name: str, local, budgets, scope: str, rounds: int, by_examples: bool) -> Warmup:
    """Jump-Start as a ``Warmup``: ``rounds`` virtual rounds of ``local`` (``train_and_prune`` with its
    settings bound) from the initial model, then one upload (no download); the server takes the
    mask-aware mean (norm leaves: their mean) with zero momentum."""

    def client_update(server_state, own: ClientState, task, dataset):
        mask = entry_mask(own.params, own, task, budgets, scope)
        steps = task.batch_indices.shape[0] // rounds
        blocks = lambda a: a.reshape(rounds, steps, *a.shape[1:])

        def virtual_round(carry, block):
            model_vars, mask = carry
            index, batch_indices, batch_mask = block
            sub = task._replace(
                batch_indices=batch_indices,
                batch_mask=batch_mask,
                key=jax.random.fold_in(task.key, index),
            )
            trained, mask, loss = local(model_vars, mask, sub, dataset)
            return (trained, mask), loss

        start = ModelVars(masks.apply_mask(own.params, mask), own.state)
        schedule = (jnp.arange(rounds), blocks(task.batch_indices), blocks(task.batch_mask))
        (trained, new_mask), losses = jax.lax.scan(virtual_round, (start, mask), schedule)
        return upload(
            server_state, trained, new_mask, task, losses.mean(), jnp.int32(0), by_examples
        )

    def round_zero(server_state, total):
        return ServerState(
            masked.masked_server_model(total, server_state.model),
            jax.tree.map(jnp.zeros_like, server_state.momentum),
        )

    algorithm = FederatedAlgorithm(
        f"{name}_jump_start", server_init, client_init, client_update, round_zero
    )
    return Warmup(algorithm, epochs=rounds)


def tier_report(budgets: tuple[float, ...]):
    """Lean start's ``report``: ``personal_acc_b<P>``, ``model_mb_b<P>`` and ``density_b<P>``, means
    over the clients of the budget-``P`` % tier (client k's tier is ``budgets[k % len(budgets)]``)."""

    def report(server_state, scores: PersonalScores) -> dict:
        tier = np.asarray(budgets)[np.arange(len(scores.accuracy)) % len(budgets)]
        out = {}
        for budget in sorted(set(budgets), reverse=True):
            of, name = tier == budget, f"b{round(100 * budget)}"
            out[f"personal_acc_{name}"] = float(scores.accuracy[of].mean())
            out[f"model_mb_{name}"] = float(scores.model_bytes[of].astype(np.float64).mean()) / 1e6
            out[f"density_{name}"] = float(scores.density[of].mean())
        return out

    return report


def fedltn(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    *,
    target_density: float = 0.1,
    prune_rate: float = 0.2,
    prune_threshold: float = 0.5,
    server_lr: float = 0.1,
    server_momentum: float = 0.9,
    scope: str = "layer",
    weight_by_examples: bool = False,
    density_budgets: tuple[float, ...] = (),
    jump_start_rounds: int = 0,
    reestimate_bn: bool = True,
    name: str = "fedltn",
) -> FederatedAlgorithm:
    """FedLTN with fedsim's defaults (``target_density`` 0.1, ``prune_rate`` 0.2, threshold 0.5,
    ``server_lr`` 0.1 at ``server_momentum`` 0.9: the rule ``server_lr = 1 - server_momentum`` makes
    the server's steady-state step ``server_lr / (1 - server_momentum)`` one mean update, as FedAvg's).

    With ``jump_start_rounds > 0`` the algorithm carries its Jump-Start as ``warmup`` (its clients get
    ``jump_start_rounds`` times the local epochs of a round, one block per virtual round); with
    ``density_budgets`` it reports each tier (``tier_report``)."""
    budgets = tuple(density_budgets)
    rule = Pruning(target_density, prune_rate, prune_threshold, scope)
    refresh = norm_stats.reestimator(model, reestimate_bn)
    local = functools.partial(train_and_prune, model, client_optimizer, rule, refresh)

    def client_update(server_state, own: ClientState, task, dataset):
        received = download(server_state.model.params, own)
        mask = entry_mask(received, own, task, budgets, scope)
        start = ModelVars(masks.apply_mask(received, mask), own.state)
        trained, new_mask, loss = local(start, mask, task, dataset)
        down_bytes = masked_bytes(start.params, mask, skip_norm=True)
        return upload(server_state, trained, new_mask, task, loss, down_bytes, weight_by_examples)

    def personalize(server_state, own: ClientState, task, dataset):
        deployed = refresh(ModelVars(own.params, own.state), task, dataset)
        return masked.personal_model(deployed, own.mask)

    warmup = None
    if jump_start_rounds:
        warmup = jump_start(name, local, budgets, scope, jump_start_rounds, weight_by_examples)
    return FederatedAlgorithm(
        name,
        server_init,
        client_init,
        client_update,
        functools.partial(server_update, server_lr=server_lr, server_momentum=server_momentum),
        personalize,
        warmup=warmup,
        report=tier_report(budgets) if budgets else None,
    )


def _build(hp: dict, setup: ClientSetup) -> FederatedAlgorithm:
    return fedltn(
        setup.model,
        setup.optimizer,
        server_lr=hp["server_lr"],
        server_momentum=hp["server_momentum"],
        density_budgets=tuple(hp["density_budgets"]),
        jump_start_rounds=hp["jump_start_rounds"],
        reestimate_bn=setup.reestimate_bn,
        **masked.pruning_kwargs(hp),
    )


def _check(hp: dict) -> None:
    masked.check_pruning(hp, "fedltn")
    check_ranges(hp, "fedltn", server_lr=">0", server_momentum="[0,1)", jump_start_rounds=">=0")
    if not all(0 < b <= 1 for b in hp["density_budgets"]):
        raise ConfigError(
            f"fedltn.density_budgets={tuple(hp['density_budgets'])}: each must lie in (0, 1]"
        )


SPEC = AlgorithmSpec(
    "fedltn",
    _build,
    hparams={
        **masked.PRUNING,
        "server_lr": 0.1,  # eta; eta / (1 - beta) = 1: in steady state one mean update per round
        "server_momentum": 0.9,  # momentum beta over the covered coordinates of the masked mean
        "density_budgets": (),  # lean start: per-client density tiers, e.g. (1.0, 0.5, 0.25)
        "jump_start_rounds": 0,  # Jump-Start: local-only virtual rounds before round 1 (paper: 3)
    },
    traceable=("server_lr",),
    check=_check,
    needs_validation=True,
)
