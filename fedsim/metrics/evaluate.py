"""Accuracy of a model on the pooled test set and on each client's own test split.

For algorithms whose clients deploy the server model, one pass over the pooled test set gives every
client's accuracy: client c's accuracy is the mean correctness over its test indices.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.algorithms.base import Dataset
from fedsim.algorithms.local import masked_hits
from fedsim.algorithms.task import client_task
from fedsim.models.base import Model


def build_predict_correct(model: Model, batch_size: int):
    """Returns ``correct(model_vars, x, y) -> bool`` of ``y``'s shape (``[M]``, or ``[M, T]`` for a
    sequence model), evaluating in batches of ``batch_size``."""

    def correct(model_vars, x, y):
        m = x.shape[0]
        num_batches = math.ceil(m / batch_size)
        pad = num_batches * batch_size - m
        xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        xb = xb.reshape((num_batches, batch_size) + x.shape[1:])

        def predict(batch):
            logits, _ = model.apply(model_vars, batch, False, jax.random.PRNGKey(0))
            return jnp.argmax(logits, axis=-1)

        return jax.lax.map(predict, xb).reshape((-1,) + y.shape[1:])[:m] == y

    return correct


def per_client_accuracy(correct: np.ndarray, test_indices: np.ndarray, num_test: np.ndarray):
    """Mean of ``correct`` over each client's first ``num_test[c]`` entries of ``test_indices[c]``
    (over every position of those entries, for a sequence model's ``[M, T]``)."""
    correct = correct.mean(axis=tuple(range(1, correct.ndim)))  # one value per entry
    valid = np.arange(test_indices.shape[1])[None, :] < num_test[:, None]
    hits = np.where(valid, correct[test_indices], False).sum(axis=1)
    return hits / np.maximum(num_test, 1)


def worst_fraction_mean(values: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of the lowest ``ceil(fraction * len(values))`` values (``personal_acc_worst10``)."""
    k = max(1, math.ceil(fraction * len(values)))
    return float(np.sort(values)[:k].mean())


def build_personal_eval(model: Model, personalize, *, epochs: int, batch_size: int, chunk: int):
    """Returns ``evaluate(server_state, client_states, federation, x_test, y_test, test_indices,
    num_test, key) -> (hits [C], model_bytes [C], values_bytes [C], density [C])``.

    Client ``c`` deploys ``personalize(server_state, client_states[c], task, dataset)`` (its mask,
    personal normalisation, personal weights, or a fine-tuned copy, per algorithm) and is scored on its
    own test split. Clients run ``chunk`` at a time (``lax.map``), so memory does not grow with C.
    """

    def evaluate(
        server_state, client_states, federation, x_test, y_test, test_indices, num_test, key
    ):
        dataset = Dataset(federation.x, federation.y)

        def one(row):
            state = jax.tree.map(lambda s: s[row], client_states)
            task = client_task(
                federation, row, jax.random.fold_in(key, row), epochs=epochs, batch_size=batch_size
            )
            personal = personalize(server_state, state, task, dataset)
            idx = test_indices[row]
            valid = jnp.arange(idx.shape[0]) < num_test[row]
            logits, _ = model.apply(personal.model, x_test[idx], False, jax.random.PRNGKey(0))
            hits = masked_hits(logits, y_test[idx], valid)
            return hits, personal.model_bytes, personal.values_bytes, personal.density

        rows = jnp.arange(federation.num_examples.shape[0])
        return jax.lax.map(one, rows, batch_size=chunk if chunk > 1 else None)

    return evaluate
