"""Local training shared by the FedAvg family: E epochs of minibatch steps with an optax optimiser.

Padded steps (no real example) leave parameters, model state and optimiser state unchanged; a partial
batch averages the loss over its real examples only. The optimiser state restarts every round unless
the caller passes the one it kept (``keep_client_optimizer_state``: momentum and the learning-rate
schedule's step carry on across rounds, as in one central training run).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientTask, Dataset
from fedsim.models.base import Model, ModelVars


class LocalResult(NamedTuple):
    model: ModelVars
    loss: jax.Array  # mean over real steps
    num_steps: jax.Array  # int32, real steps taken
    opt_state: optax.OptState = ()  # the optimiser state after the last real step


def per_example(values, mask):
    """``values [B, ...]`` averaged over all but the leading axis, to ``mask``'s shape ``[B]`` (a
    sequence model's per-position values become one value per window)."""
    return values.mean(axis=tuple(range(mask.ndim, values.ndim)))


def masked_cross_entropy(logits, labels, mask):
    """Mean softmax cross-entropy over the examples where ``mask`` is True; an example with one label
    per position (``labels [B, T]``, ``logits [B, T, V]``) scores the mean over its positions."""
    per_label = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example(per_label, mask) * mask) / jnp.maximum(jnp.sum(mask), 1)


def masked_hits(logits, labels, mask):
    """Number of correct argmax predictions over the examples where ``mask`` is True (an example
    with one label per position counts the fraction of its positions that are right)."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(per_example(correct, mask) * mask)


def local_train(
    model: Model,
    optimizer: optax.GradientTransformation,
    start: ModelVars,
    task: ClientTask,
    dataset: Dataset,
    adjust_grads: Callable | None = None,
    loss_fn: Callable | None = None,
    opt_state: optax.OptState | None = None,
) -> LocalResult:
    """Runs the client's local steps from ``start``.

    ``adjust_grads(params, grads) -> grads`` changes the gradient before the optimiser (FedProx's
    proximal term, SCAFFOLD's control-variate correction). ``loss_fn(params, state, x, y, mask, key)
    -> (loss, new_state)`` replaces the masked cross-entropy (Maestro's sampled ranks and group lasso).
    ``opt_state`` continues an earlier optimiser state instead of ``optimizer.init``.
    """

    def cross_entropy(params, state, x, y, mask, key):
        logits, new_state = model.apply(ModelVars(params, state), x, True, key, mask)
        return masked_cross_entropy(logits, y, mask), new_state

    loss_fn = loss_fn or cross_entropy

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(carry, indices, mask, key):
        params, state, opt_state = carry
        x, y = dataset.x[indices], dataset.y[indices]
        (loss, new_state), grads = grad_fn(params, state, x, y, mask, key)
        if adjust_grads is not None:
            grads = adjust_grads(params, grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_state, opt_state), loss

    def step(carry, inputs):
        indices, mask, key = inputs
        real = jnp.any(mask)
        model_carry, loss = jax.lax.cond(
            real,
            lambda c: train_step(c, indices, mask, key),
            lambda c: (c, jnp.zeros((), jnp.float32)),
            carry[0],
        )
        return (model_carry, carry[1] + loss, carry[2] + real.astype(jnp.int32)), None

    num_padded_steps = task.batch_indices.shape[0]
    keys = jax.random.split(task.key, num_padded_steps)
    opt_state = optimizer.init(start.params) if opt_state is None else opt_state
    init = ((start.params, start.state, opt_state), jnp.zeros(()), jnp.int32(0))
    ((params, state, opt_state), loss_sum, steps), _ = jax.lax.scan(
        step, init, (task.batch_indices, task.batch_mask, keys)
    )
    return LocalResult(ModelVars(params, state), loss_sum / jnp.maximum(steps, 1), steps, opt_state)
