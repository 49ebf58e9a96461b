"""BatchNorm re-estimation (``fedsim.algorithms.norm_stats``) equals the mean and biased variance over a
client's real examples, computed by hand; and FedLTN's pruning gate refuses a constant predictor."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_traces import smoke_config

from fedsim.algorithms import masked, norm_stats
from fedsim.algorithms.base import ClientTask, Dataset
from fedsim.engine.setup import build_experiment
from fedsim.models.base import from_flax
from fedsim.models.layers import BN_MOMENTUM

KEY = jax.random.PRNGKey(0)
EPS = 1e-5


class TwoBN(nn.Module):
    """BatchNorm on the input, a dense layer, BatchNorm again."""

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        bn_mask = None if mask is None else mask[:, None]
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=EPS)
        x = bn()(x, mask=bn_mask)
        x = nn.Dense(5)(nn.relu(x))
        x = bn()(x, mask=bn_mask)
        return nn.Dense(3)(x)


def task_of(examples, num_examples, val_indices=(), val_size=0):
    """A task whose client owns ``examples`` (the first ``num_examples`` real)."""
    examples = jnp.asarray(examples, jnp.int32)
    val = jnp.asarray(val_indices, jnp.int32)
    return ClientTask(
        examples.reshape(1, -1),
        (jnp.arange(examples.size) < num_examples).reshape(1, -1),
        jnp.int32(num_examples),
        KEY,
        jnp.int32(0),
        val,
        jnp.arange(val.size) < val_size,
        examples,
    )


def by_hand(params, x):
    """Each layer's mean and biased variance over ``x`` in one full-batch train-mode pass."""
    first = (x.mean(0), x.var(0))
    h = np.maximum((x - first[0]) / np.sqrt(first[1] + EPS), 0)
    h = h @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"])
    return {"BatchNorm_0": first, "BatchNorm_1": (h.mean(0), h.var(0))}


@pytest.fixture
def setting():
    x = jax.random.normal(KEY, (12, 4)) * 3 + 1
    model = from_flax("two_bn", TwoBN())
    return model, model.init(KEY, x[:1]), Dataset(x, jnp.zeros(12, jnp.int32))


def test_reestimate_is_the_mean_and_variance_over_real_examples(setting):
    model, mv, dataset = setting
    own = [3, 7, 0, 9, 4, 11, 2, 5, 6, 8]  # 7 real, then padding that points at other examples
    out = norm_stats.reestimate(model, mv, task_of(own, 7), dataset)
    expected = by_hand(mv.params, np.asarray(dataset.x)[own[:7]])
    for layer, (mean, var) in expected.items():
        got = out.state["batch_stats"][layer]
        np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["var"], var, rtol=1e-4, atol=1e-6)
    assert out.params is mv.params


def test_blocks_pool_the_first_layer_exactly(setting, monkeypatch):
    model, mv, dataset = setting
    monkeypatch.setattr(norm_stats, "BLOCK", 3)  # 10 slots: blocks of 3, 3, 3 and 1 (padding)
    own = list(range(10))
    stats = norm_stats.reestimate(model, mv, task_of(own, 8), dataset).state["batch_stats"]
    real = np.asarray(dataset.x)[:8]
    np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["BatchNorm_0"]["var"], real.var(0), rtol=1e-4)


class Sign(nn.Module):
    """Predicts class 1 where the feature is positive (``scale`` 0: always class 0, a constant)."""

    scale: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        bias = self.param("bias", lambda key: jnp.array([1e-3, 0.0]))
        return self.scale * jnp.concatenate([-x, x], axis=1) + bias


def test_a_model_without_batch_norm_is_unchanged():
    model = from_flax("sign", Sign())
    x = jnp.ones((4, 1))
    mv = model.init(KEY, x[:1])
    out = norm_stats.reestimator(model, True)(mv, task_of([0, 1, 2, 3], 4), Dataset(x, x[:, 0]))
    assert out is mv
    assert norm_stats.reestimator(model, False)(mv, None, None) is mv


def test_the_pruning_gate_refuses_a_constant_predictor():
    y = jnp.array([0, 0, 0, 1, 1, 0, 0, 1], jnp.int32)  # validation rows 0-4: majority rate 0.6
    data = Dataset(2.0 * y[:, None] - 1.0, y)
    task = task_of(range(8), 8, val_indices=[0, 1, 2, 3, 4], val_size=5)
    constant, learned = (from_flax("sign", Sign(scale)) for scale in (0.0, 1.0))
    mv = constant.init(KEY, data.x[:1])
    accuracy, majority = masked.validation_scores(constant, mv, task, data)
    assert (float(accuracy), float(majority)) == pytest.approx((0.6, 0.6))
    assert not masked.validation_gate(constant, mv, task, data, 0.5)  # clears 0.5, not the majority
    assert masked.validation_gate(learned, mv, task, data, 0.5)
    assert not masked.validation_gate(learned, mv, task, data, 1.01)  # the threshold still applies
    assert not masked.validation_gate(learned, mv, task_of(range(8), 8), data, 0.0)  # no split


@pytest.mark.parametrize("enabled", [True, False])
def test_reestimate_bn_is_a_key(monkeypatch, enabled):
    built = []
    real = norm_stats.reestimator
    monkeypatch.setattr(norm_stats, "reestimator", lambda m, on: built.append(on) or real(m, on))
    config = smoke_config(algorithm="fedbn", model="bn_cnn", reestimate_bn=enabled)
    config.model_kwargs = {"width": 4}
    build_experiment(config)
    assert built and set(built) == {enabled}
