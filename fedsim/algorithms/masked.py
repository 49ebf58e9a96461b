"""Building blocks shared by the sparse, personalised algorithms (FedLTN, LotteryFL, Sub-FedAvg, FedBN):
mask-aware local training, local validation accuracy, mask-aware aggregation and per-client storage.

Mask-aware aggregation (LotteryFL, Sub-FedAvg, FedLTN): every coordinate is averaged over the clients
whose mask keeps it, ``sum_k a_k m_k W_k / sum_k a_k m_k``; a coordinate nobody kept keeps the server
value. Clients send their masked update as an ``Update`` (delta ``a m (W - W_server)``, coverage ``a m``)
and the engine's streamed sum does the rest; the server adds the covered mean of the updates to its model, which is the same average. Sending
updates rather than weights is what lets ``fedsim.privacy`` clip and noise them like FedAvg's.
"""

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientTask, Dataset, Personal, Update, mean_of
from fedsim.algorithms.local import LocalResult, local_train, masked_hits
from fedsim.algorithms.spec import check_choice, check_ranges
from fedsim.compress import masks
from fedsim.compress.encode import dense_bytes, masked_bytes
from fedsim.models.base import Model, ModelVars


def masked_local_train(
    model: Model,
    optimizer: optax.GradientTransformation,
    start: ModelVars,
    mask,
    task: ClientTask,
    dataset: Dataset,
) -> LocalResult:
    """Local training in which pruned coordinates stay exactly zero.

    Gradients are zeroed where the mask is off, so every optimiser update there is zero too; the result
    is masked once more so the invariant holds for any optimiser.
    """
    start = start._replace(params=masks.apply_mask(start.params, mask))
    result = local_train(
        model, optimizer, start, task, dataset, lambda params, grads: masks.apply_mask(grads, mask)
    )
    params = masks.apply_mask(result.model.params, mask)
    return result._replace(model=result.model._replace(params=params))


def validation_scores(model: Model, model_vars: ModelVars, task: ClientTask, dataset: Dataset):
    """``(accuracy, majority-class rate)`` on the client's held-out validation split (0s without one);
    the majority-class rate is what the best constant predictor scores there."""
    x, y = dataset.x[task.val_indices], dataset.y[task.val_indices]
    logits, _ = model.apply(model_vars, x, False, task.key)
    size = jnp.maximum(jnp.sum(task.val_mask), 1)
    hits = masked_hits(logits, y, task.val_mask)
    num_classes = logits.shape[-1]
    one_hot = jax.nn.one_hot(y, num_classes)  # [V, C] or, with one label per position, [V, T, C]
    frequencies = one_hot.mean(axis=tuple(range(1, one_hot.ndim - 1)))
    counts = jnp.sum(frequencies * task.val_mask[:, None], axis=0)
    return hits / size, jnp.max(counts, initial=0.0) / size


def validation_accuracy(model: Model, model_vars: ModelVars, task: ClientTask, dataset: Dataset):
    """Accuracy on the client's held-out validation split (0 when it has none)."""
    return validation_scores(model, model_vars, task, dataset)[0]


def validation_gate(model: Model, model_vars, task: ClientTask, dataset: Dataset, threshold):
    """FedLTN's pruning gate: validation accuracy at least ``threshold`` and strictly above the split's
    majority-class rate, so a model no better than a constant predictor (e.g. on a two-label client)
    never prunes; False without a validation split."""
    accuracy, majority = validation_scores(model, model_vars, task, dataset)
    return (accuracy >= threshold) & (accuracy > majority)


def aggregation_weight(task: ClientTask, by_examples: bool) -> jax.Array:
    """``a_k``: 1 (unweighted, LotteryFL/Sub-FedAvg/FedLTN default) or ``n_k``."""
    return task.num_examples.astype(jnp.float32) if by_examples else jnp.float32(1)


def masked_contribution(params, reference, mask, weight) -> Update:
    """``Update(a m (W - W_ref), a, coverage=a m)`` with the coverage broadcast to every leaf."""
    return Update(
        delta=jax.tree.map(
            lambda p, r, m: weight * jnp.where(m, p - r, 0), params, reference, mask
        ),
        weight=weight,
        coverage=jax.tree.map(
            lambda p, m: weight * jnp.broadcast_to(m, p.shape).astype(p.dtype), params, mask
        ),
    )


def masked_model_contribution(model_vars: ModelVars, reference, mask, weight) -> Update:
    """``masked_contribution`` of the params (update from the server's ``reference`` params) plus
    ``a``-weighted model state."""
    contribution = masked_contribution(model_vars.params, reference, mask, weight)
    return contribution._replace(state=jax.tree.map(lambda s: weight * s, model_vars.state))


def masked_average(total: Update, current):
    """Per coordinate: ``current`` plus the covered mean update (``current`` where nobody kept it)."""
    return jax.tree.map(
        lambda w, m, c: jnp.where(c > 0, w + m, w), current, mean_of(total)[0], total.coverage
    )


def masked_server_model(total: Update, current: ModelVars) -> ModelVars:
    """The server model from summed ``masked_model_contribution``s: masked-average params, mean state."""
    return ModelVars(masked_average(total, current.params), mean_of(total)[1])


def personal_model(model_vars: ModelVars, mask) -> Personal:
    """A client's stored sparse model: encoded bytes (values and values-only) and its density."""
    state_bytes = dense_bytes(model_vars.state)
    return Personal(
        model=model_vars,
        model_bytes=masked_bytes(model_vars.params, mask) + state_bytes,
        values_bytes=masked_bytes(model_vars.params, mask, values_only=True) + state_bytes,
        density=masks.density(mask, model_vars.params),
    )


# The pruning hyper-parameters LotteryFL, Sub-FedAvg and FedLTN share (each section has its own copy).
PRUNING = {
    "target_density": 0.1,  # stop pruning once this fraction of prunable weights is kept
    "prune_rate": 0.2,  # fraction of the kept weights removed per prune event
    "prune_threshold": 0.5,  # validation accuracy a client needs before it prunes
    "prune_scope": "layer",  # 'layer': magnitude threshold per layer, 'global': over all layers
    "aggregation_weights": "uniform",  # masked mean weights a_k: 'uniform' or 'examples'
}


def pruning_kwargs(hparams: dict) -> dict:
    """The factories' keyword arguments for the ``PRUNING`` keys of a section."""
    return {
        "target_density": hparams["target_density"],
        "prune_rate": hparams["prune_rate"],
        "prune_threshold": hparams["prune_threshold"],
        "scope": hparams["prune_scope"],
        "weight_by_examples": hparams["aggregation_weights"] == "examples",
    }


def check_pruning(hparams: dict, name: str) -> None:
    """One-line ``ConfigError`` for a bad ``PRUNING`` value of section ``name``."""
    check_ranges(hparams, name, target_density="(0,1]", prune_rate="[0,1]", prune_threshold="[0,1]")
    check_choice(hparams, name, "prune_scope", ("layer", "global"))
    check_choice(hparams, name, "aggregation_weights", ("uniform", "examples"))
