"""BatchNorm statistics re-estimated on a client's own training data, for every method whose clients
keep or deploy their own normalisation (FedBN: Li et al., ICLR 2021; FedLTN; the personalised
baselines; Maestro's recalibration).

Running statistics are an exponential average over a client's last few
steps, of weights that moved while they were gathered; and a client deploying shared weights
received later (FedBN, FedAvg+FT) holds statistics of older weights. Evaluation and FedLTN's pruning
gate read them. ``reestimate`` replaces them by the statistics of the current weights over the
client's real examples, each counted once ("precise BN": Wu and Johnson, 'Rethinking "Batch" in
BatchNorm', 2021): one train-mode pass in blocks of ``BLOCK`` examples. A client with at most
``BLOCK`` examples is one full batch, so every layer's mean and (biased) variance are exactly those
over its real examples; a larger client pools its blocks' means and second moments by count.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from fedsim.algorithms.base import ClientTask, Dataset
from fedsim.models.base import Model, ModelVars

BATCH_STATS = "batch_stats"
BLOCK = 512  # examples per train-mode pass


def _is_norm(node) -> bool:
    return isinstance(node, Mapping) and set(node) == {"mean", "var"}


def _batch_weights(model: Model, model_vars: ModelVars, x, key):
    """``1 - momentum`` of every statistic (running = momentum running + (1 - momentum) batch), read
    off two one-example train-mode passes, from zero statistics and from ones."""
    passes = []
    for fill in (jnp.zeros_like, jnp.ones_like):
        start = jax.tree.map(fill, model_vars.state[BATCH_STATS])
        _, new = model.apply(_with_stats(model_vars, start), x[:1], True, key)
        passes.append(new[BATCH_STATS])
    return jax.tree.map(lambda zero, one: 1.0 - (one - zero), *passes)


def _moments(stats, weights):
    """A BatchNorm layer's running ``{mean, var}`` after one update from zero -> its batch's first and
    second moments."""
    mean, var = (stats[k] / weights[k] for k in ("mean", "var"))
    return {"mean": mean, "var": var + mean**2}


def _with_stats(model_vars: ModelVars, stats) -> ModelVars:
    return model_vars._replace(state={**model_vars.state, BATCH_STATS: stats})


def _statistics(moments, count):
    """Pooled ``{mean, var}`` from count-weighted summed moments."""
    mean = moments["mean"] / count
    return {"mean": mean, "var": jnp.maximum(moments["var"] / count - mean**2, 0.0)}


def reestimate(
    model: Model, model_vars: ModelVars, task: ClientTask, dataset: Dataset
) -> ModelVars:
    """``model_vars`` with its BatchNorm statistics measured on the client's real examples (unchanged
    for a model without BatchNorm)."""
    if BATCH_STATS not in model_vars.state:
        return model_vars
    num = task.examples.shape[0]
    size = min(num, BLOCK)
    blocks = -(-num // size)
    indices = jnp.pad(task.examples, (0, blocks * size - num)).reshape(blocks, size)
    real = (jnp.arange(blocks * size) < task.num_examples).reshape(blocks, size)
    zero = jax.tree.map(jnp.zeros_like, model_vars.state[BATCH_STATS])
    start = _with_stats(model_vars, zero)
    weights = _batch_weights(model, model_vars, dataset.x[indices[0]], task.key)

    def block(total, inputs):
        rows, mask = inputs
        _, new = model.apply(start, dataset.x[rows], True, task.key, mask)
        count = jnp.sum(mask).astype(jnp.float32)
        moments = jax.tree.map(_moments, new[BATCH_STATS], weights, is_leaf=_is_norm)
        add = lambda t, m: t + jnp.where(count > 0, count * m, 0.0)
        return jax.tree.map(add, total, moments), count

    totals, counts = jax.lax.scan(block, zero, (indices, real))
    count = jnp.maximum(jnp.sum(counts), 1.0)
    stats = jax.tree.map(lambda m: _statistics(m, count), totals, is_leaf=_is_norm)
    return _with_stats(model_vars, stats)


def reestimator(model: Model, enabled: bool) -> Callable[..., ModelVars]:
    """``refresh(model_vars, task, dataset)``: ``reestimate`` when ``enabled`` (config key
    ``reestimate_bn``), else the identity."""
    if not enabled:
        return lambda model_vars, task, dataset: model_vars
    return lambda model_vars, task, dataset: reestimate(model, model_vars, task, dataset)
