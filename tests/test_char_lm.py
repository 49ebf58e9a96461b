"""The causal character Transformer trained on every position: its mask, its next-token targets, the
every-position loss and accuracy against hand-computed values, and a federated smoke run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.algorithms.local import masked_cross_entropy, masked_hits
from fedsim.cli import main
from fedsim.data.arrays import ArrayDataset
from fedsim.data.federated import build_federated_data
from fedsim.data.sequence import next_token_targets, with_next_token_targets
from fedsim.errors import ConfigError
from fedsim.metrics.evaluate import per_client_accuracy
from fedsim.models import get_model

KEY = jax.random.PRNGKey(0)
TOKENS = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 11)


@pytest.mark.parametrize("factorized", [False, True])
def test_logits_at_every_position_for_dense_and_factorised(factorized):
    model = get_model("transformer", 11, dim=16, heads=2, layers=2, factorized=factorized)
    logits, _ = model.apply(model.init(KEY, TOKENS[:1]), TOKENS, False, KEY)
    assert model.sequence_targets and logits.shape == (2, 12, 11)


@pytest.mark.parametrize("factorized", [False, True])
def test_position_t_does_not_see_inputs_after_t(factorized):
    model = get_model("transformer", 11, dim=16, heads=2, layers=2, factorized=factorized)
    model_vars = model.init(KEY, TOKENS[:1])
    t = 5
    changed = TOKENS.at[:, t + 1 :].set((TOKENS[:, t + 1 :] + 3) % 11)
    before, _ = model.apply(model_vars, TOKENS, False, KEY)
    after, _ = model.apply(model_vars, changed, False, KEY)
    np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], atol=1e-6)
    assert np.abs(after[:, t + 1 :] - before[:, t + 1 :]).min(axis=-1).max() > 1e-4


def test_targets_are_the_window_shifted_by_one_then_its_label():
    text = np.arange(10, dtype=np.uint8)
    x = np.stack([text[i : i + 4] for i in range(5)])
    y = text[4:9].astype(np.int32)
    targets = next_token_targets(x, y)
    np.testing.assert_array_equal(targets, np.stack([text[i + 1 : i + 5] for i in range(5)]))
    assert targets.dtype == np.int32


def _log_softmax(row):
    return row - np.log(np.sum(np.exp(row)))


def test_every_position_loss_is_the_mean_over_real_windows_of_their_positions():
    logits = np.array(
        [[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]],
         [[9.0, 0.0, 0.0], [9.0, 0.0, 0.0]]]
    )  # fmt: skip
    labels = np.array([[0, 2], [2, 1], [1, 1]])
    mask = np.array([True, True, False])
    per_position = [[-_log_softmax(logits[b, t])[labels[b, t]] for t in range(2)] for b in range(2)]
    expected = np.mean(per_position)  # both real windows have 2 positions
    loss = masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # argmax per position: [0, 1] vs [0, 2] -> 1/2; [2, 0] vs [2, 1] -> 1/2; window 3 masked
    assert float(masked_hits(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))) == 1.0


def test_per_client_accuracy_averages_every_position_of_the_clients_windows():
    correct = np.array([[True, True], [True, False], [False, False]])
    accuracy = per_client_accuracy(correct, np.array([[0, 1], [2, 0]]), np.array([2, 1]))
    np.testing.assert_allclose(accuracy, [0.75, 0.0])


def _token_federation(x):
    y = np.zeros(len(x), np.int32)
    dataset = ArrayDataset("toy", x, y, x[:2], y[:2], 3)
    return build_federated_data(dataset, [np.arange(len(x))], np.random.default_rng(0))


def test_sequence_targets_need_integer_token_windows():
    data = with_next_token_targets(_token_federation(np.ones((4, 3), np.uint8)))
    assert data.y_train.shape == (4, 3) and data.label_histogram.shape == (1, 3)
    with pytest.raises(ConfigError, match="token windows"):
        with_next_token_targets(_token_federation(np.ones((4, 3), np.float32)))


def test_federated_and_pooled_shakespeare_transformer_smoke_runs(tmp_path):
    for mode in ("shakespeare", "shakespeare_central"):
        workdir = tmp_path / mode
        arg = f"--config=configs/maestro.py:mode={mode},smoke"
        assert main(["run", arg, f"--workdir={workdir}"]) == 0
        row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
        assert 0.0 <= row["global_acc"] <= 1.0 and 0.0 <= row["last_acc"] <= 1.0
