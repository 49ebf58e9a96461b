"""Sub-FedAvg (unstructured): Vahidian, Morafah, Lin, 'Personalized Federated Learning by Structured
and Unstructured Pruning under Data Heterogeneity', ICDCS workshops 2021 (official code
MMorafah/Sub-FedAvg).

A client downloads its masked server model and trains with masked gradients. Candidate masks are taken
after the first local epoch and after the last (each drops ``prune_rate`` of the surviving weights per
layer by magnitude). If they differ by more than ``dist_thresh`` (mean over layers of the Hamming
fraction) and the client is above ``target_density``, the last model is pruned without rewinding (by
``prune_rate``, or by the smaller step that reaches the target when it is nearer than that), and kept
only if local validation accuracy stays above ``prune_threshold``. The client keeps
its own last model; the server averages each coordinate over the clients that keep it (unweighted).
Optimiser state restarts between the two phases of local training.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import masked, norm_stats
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm
from fedsim.algorithms.fedavg import ServerState
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup, check_ranges
from fedsim.compress import masks, pruning
from fedsim.compress.encode import dense_bytes, masked_bytes
from fedsim.models.base import Model, ModelVars


class ClientState(NamedTuple):
    mask: optax.Params
    model: ModelVars  # the client's last local model (what it deploys)


class Pruning(NamedTuple):
    """The prune event's settings (see the module docstring)."""

    target_density: float
    prune_rate: float
    prune_threshold: float
    dist_thresh: float
    scope: str


def server_init(model_vars) -> ServerState:
    return ServerState(model_vars, ())


def client_init(model_vars) -> ClientState:
    return ClientState(masks.init_mask(model_vars.params), model_vars)


def step_mask(rule: Pruning, params, mask):
    """The mask applied: ``prune_rate`` of the survivors, or near the target
    ``min(5 %, gap / (1 - pruned))`` (its client_u.py recomputes m2 after the distance gate)."""
    pruned_fraction = 1.0 - masks.density(mask, params)
    gap = (1.0 - rule.target_density) - pruned_fraction
    near = jnp.minimum(0.05, gap / jnp.maximum(1.0 - pruned_fraction, 1e-12))
    rate = jnp.where(gap < rule.prune_rate, near, rule.prune_rate)
    return pruning.magnitude_prune(params, mask, jnp.maximum(rate, 0.0), rule.scope)


def train_two_phases(
    model: Model, optimizer, rule: Pruning, local_epochs: int, received, mask, task, dataset
):
    """Masked training for the first local epoch, then (optimiser state restarted) for the rest, with
    the candidate mask after each. Returns ``(early, late, mask_early, mask_late)``: the two phases'
    training results and candidate masks."""
    steps = task.batch_indices.shape[0] // local_epochs
    first = task._replace(
        batch_indices=task.batch_indices[:steps], batch_mask=task.batch_mask[:steps]
    )
    rest = task._replace(
        batch_indices=task.batch_indices[steps:], batch_mask=task.batch_mask[steps:]
    )
    early = masked.masked_local_train(model, optimizer, received, mask, first, dataset)
    mask_early = pruning.magnitude_prune(early.model.params, mask, rule.prune_rate, rule.scope)
    late = masked.masked_local_train(model, optimizer, early.model, mask, rest, dataset)
    mask_late = pruning.magnitude_prune(late.model.params, mask, rule.prune_rate, rule.scope)
    return early, late, mask_early, mask_late


def prune_gate(model: Model, rule: Pruning, trained, mask, mask_early, mask_late, task, dataset):
    """The new mask: ``step_mask`` when the candidate masks moved by more than ``dist_thresh``, the
    client is above ``target_density`` and the pruned model's validation accuracy clears
    ``prune_threshold``; otherwise ``mask``."""
    moved = pruning.mask_distance(mask_early, mask_late, trained.params) > rule.dist_thresh
    above = masks.density(mask, trained.params) > rule.target_density
    candidate = step_mask(rule, trained.params, mask)
    pruned = trained._replace(params=masks.apply_mask(trained.params, candidate))
    good = masked.validation_accuracy(model, pruned, task, dataset) > rule.prune_threshold
    accept = moved & above & good
    return jax.tree.map(lambda a, b: jnp.where(accept, a, b), candidate, mask)


def upload(
    server: ModelVars, received, mask, deployed: ModelVars, new_mask, task, loss, by_examples
):
    """What the client sends (its masked model contribution) and keeps (``deployed``)."""
    weight = masked.aggregation_weight(task, by_examples)
    contribution = masked.masked_model_contribution(deployed, server.params, new_mask, weight)
    state_bytes = dense_bytes(server.state)
    return ClientResult(
        contribution=contribution,
        client_state=ClientState(new_mask, deployed),
        loss=loss,
        up_bytes=masked_bytes(deployed.params, new_mask) + state_bytes,
        down_bytes=masked_bytes(received.params, mask) + state_bytes,
    )


def server_update(server_state, total):
    return server_state._replace(model=masked.masked_server_model(total, server_state.model))


def subfedavg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    *,
    local_epochs: int,
    target_density: float = 0.1,
    prune_rate: float = 0.1,
    prune_threshold: float = 0.5,
    dist_thresh: float = 1e-4,
    scope: str = "layer",
    weight_by_examples: bool = False,
    reestimate_bn: bool = True,
    name: str = "subfedavg",
) -> FederatedAlgorithm:
    """Sub-FedAvg with its script's defaults (10 % per prune event, distance 1e-4, accuracy 0.5); with
    ``reestimate_bn`` the deployed model's BatchNorm statistics are re-measured on the client's data."""
    rule = Pruning(target_density, prune_rate, prune_threshold, dist_thresh, scope)
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def client_update(server_state, own: ClientState, task, dataset):
        server = server_state.model
        mask = own.mask
        received = ModelVars(masks.apply_mask(server.params, mask), server.state)
        early, late, mask_early, mask_late = train_two_phases(
            model, client_optimizer, rule, local_epochs, received, mask, task, dataset
        )
        trained = late.model
        new_mask = prune_gate(model, rule, trained, mask, mask_early, mask_late, task, dataset)
        params = masks.apply_mask(trained.params, new_mask)
        real_steps = early.num_steps + late.num_steps
        loss = (early.loss * early.num_steps + late.loss * late.num_steps) / jnp.maximum(
            real_steps, 1
        )
        deployed = ModelVars(params, trained.state)
        return upload(server, received, mask, deployed, new_mask, task, loss, weight_by_examples)

    def personalize(server_state, own: ClientState, task, dataset):
        return masked.personal_model(refresh(own.model, task, dataset), own.mask)

    return FederatedAlgorithm(
        name, server_init, client_init, client_update, server_update, personalize
    )


def _build(hp: dict, setup: ClientSetup) -> FederatedAlgorithm:
    return subfedavg(
        setup.model,
        setup.optimizer,
        local_epochs=setup.local_epochs,
        dist_thresh=hp["dist_thresh"],
        reestimate_bn=setup.reestimate_bn,
        **masked.pruning_kwargs(hp),
    )


def _check(hp: dict) -> None:
    masked.check_pruning(hp, "subfedavg")
    check_ranges(hp, "subfedavg", dist_thresh=">=0")


SPEC = AlgorithmSpec(
    "subfedavg",
    _build,
    hparams={
        **masked.PRUNING,
        "prune_rate": 0.1,  # its script: 10 % of the kept weights per prune event
        "dist_thresh": 1e-4,  # mask change (normalised Hamming distance) needed to accept a prune
    },
    check=_check,
    needs_validation=True,
)
