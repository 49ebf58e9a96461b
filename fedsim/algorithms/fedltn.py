"""FedLTN: Mugunthan, Lin, Gokul, Lau, Kagal, Pieper, 'FedLTN: Federated Learning for Sparse and
Personalized Lottery Ticket Networks', ECCV 2022 (procedure: ../shared/specs/fedltn.md section 3).

Each client trains its masked model, then, once its local validation accuracy clears
``prune_threshold``, prunes ``min(prune_rate, 1 - target/density)`` of its surviving weights by trained
magnitude with no rewinding. Normalisation layers (parameters and statistics) stay personal (FedBN).
The server averages every coordinate over the clients whose mask keeps it and applies momentum
(FedAvgM form) only where some client covered the coordinate, so weights nobody trains do not drift.

Lean start: with ``density_budgets`` (e.g. ``(1.0, 0.5, 0.25)``), client ``k`` gets tier
``budgets[k % len(budgets)]`` and, at its first participation, one-shot prunes the received server model
to that density before training, so it never stores or moves more than its budget.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import masked
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm
from fedsim.algorithms.fedavg import client_optimizer_from_config
from fedsim.compress import masks, pruning
from fedsim.compress.encode import masked_bytes
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars  # w_g; its normalisation leaves/statistics: the round's mean (global_acc only)
    momentum: optax.Params  # v, shaped like the params


class ClientState(NamedTuple):
    mask: optax.Params  # bool per prunable coordinate (scalar True for other leaves)
    params: optax.Params  # W_k: the last local weights, personal normalisation included
    state: optax.Params  # personal BatchNorm statistics
    joined: jax.Array  # bool: has taken part in a round (lean start applies once)


def fedltn(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    *,
    target_density: float = 0.1,
    prune_rate: float = 0.2,
    prune_threshold: float = 0.5,
    server_lr: float = 1.0,
    server_momentum: float = 0.9,
    scope: str = "layer",
    weight_by_examples: bool = False,
    density_budgets: tuple[float, ...] = (),
    name: str = "fedltn",
) -> FederatedAlgorithm:
    """FedLTN with the spec's defaults (``target_density`` 0.1, ``prune_rate`` 0.2, threshold 0.5)."""
    budgets = jnp.asarray(density_budgets, jnp.float32)

    def server_init(model_vars):
        return ServerState(model_vars, jax.tree.map(jnp.zeros_like, model_vars.params))

    def client_init(model_vars):
        return ClientState(
            masks.init_mask(model_vars.params),
            model_vars.params,
            model_vars.state,
            jnp.bool_(False),
        )

    def download(server_params, own: ClientState):
        """Server weights, with this client's own normalisation leaves."""
        return jax.tree.map(
            lambda is_norm, w, mine: mine if is_norm else w,
            masks.norm_flags(server_params),
            server_params,
            own.params,
        )

    def client_update(server_state, own: ClientState, task, dataset):
        received = download(server_state.model.params, own)
        mask = own.mask
        if density_budgets:
            budget = budgets[task.client_id % budgets.shape[0]]
            lean = pruning.prune_to_density(received, own.mask, budget, scope)
            mask = jax.tree.map(lambda a, b: jnp.where(own.joined, a, b), own.mask, lean)
        start = ModelVars(masks.apply_mask(received, mask), own.state)
        result = masked.masked_local_train(model, client_optimizer, start, mask, task, dataset)
        trained = result.model

        accuracy = masked.validation_accuracy(model, trained, task, dataset)
        current = masks.density(mask, trained.params)
        prune = (accuracy >= prune_threshold) & (current > target_density)
        rate = jnp.clip(1.0 - target_density / current, 0.0, prune_rate)
        pruned = pruning.magnitude_prune(trained.params, mask, rate, scope)
        new_mask = jax.tree.map(lambda p, m: jnp.where(prune, p, m), pruned, mask)
        params = masks.apply_mask(trained.params, new_mask)

        weight = masked.aggregation_weight(task, weight_by_examples)
        contribution = masked.masked_model_contribution(
            ModelVars(params, trained.state), server_state.model.params, new_mask, weight
        )
        return ClientResult(
            contribution=contribution,
            client_state=ClientState(new_mask, params, trained.state, jnp.bool_(True)),
            loss=result.loss,
            up_bytes=masked_bytes(params, new_mask, skip_norm=True),
            down_bytes=masked_bytes(start.params, mask, skip_norm=True),
        )

    def server_update(server_state, total):
        current = server_state.model.params
        average = masked.masked_server_model(total, server_state.model)
        flags = masks.norm_flags(current)

        def momentum_step(is_norm, w, v, avg, coverage):
            return v if is_norm else jnp.where(coverage > 0, server_momentum * v + (w - avg), v)

        def param_step(is_norm, w, v, avg, coverage):
            # personal normalisation: the mean is kept for global_acc only, no momentum
            return avg if is_norm else jnp.where(coverage > 0, w - server_lr * v, w)

        leaves = (current, server_state.momentum, average.params, total["coverage"])
        momentum = jax.tree.map(momentum_step, flags, *leaves)
        leaves = (current, momentum, average.params, total["coverage"])
        params = jax.tree.map(param_step, flags, *leaves)
        return ServerState(average._replace(params=params), momentum)

    def personalize(server_state, own: ClientState, task, dataset):
        return masked.personal_model(ModelVars(own.params, own.state), own.mask)

    return FederatedAlgorithm(
        name, server_init, client_init, client_update, server_update, personalize
    )


def from_config(config, model: Model, num_clients: int) -> FederatedAlgorithm:
    return fedltn(
        model,
        client_optimizer_from_config(config),
        target_density=config.target_density,
        prune_rate=config.prune_rate,
        prune_threshold=config.prune_threshold,
        server_lr=config.server_lr,
        server_momentum=config.server_momentum,
        scope=config.prune_scope,
        weight_by_examples=config.aggregation_weights == "examples",
        density_budgets=tuple(config.density_budgets),
    )
