"""MOON (Li et al. 2021): the vmapped engine equals a plain per-client loop on three toy clients
(server model and every client's previous model, including a client whose first round is the
second), it runs from the CLI under DP and as a vmapped sweep; models' ``represent`` is ``apply`` plus
the classifier's input, and a model without a representation is a one-line ConfigError."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from test_engine_reference import (
    KEY,
    LR,
    NUM_CLIENTS,
    SIZES,
    assert_close,
    client_schedule,
    run_engine,
    to_np,
)
from test_grid import run_sweep_cells

from fedsim.algorithms.moon import moon
from fedsim.cli import main
from fedsim.errors import ConfigError
from fedsim.models import get_model
from fedsim.models.base import from_flax

MU, TAU, ROUNDS, PER_ROUND = 2.0, 0.5, 3, 2  # clients 2, 1 | 0, 2 | 1, 0


def toy_mlp(p, x):
    """The toy MLP (one hidden ReLU layer) by hand: ``(logits, hidden)``."""
    z = jax.nn.relu(x.reshape(len(x), -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return z @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], z


def moon_grad(fed, params, glob, prev, batch):
    """Gradient of mean(CE + MU l_con) with l_con = -log softmax(cos(z, z_g), cos(z, z_p))_0 / TAU."""
    x, y = fed.x[batch], fed.y[batch]
    params, glob, prev = jax.tree.map(jnp.float32, (params, glob, prev))
    cos = lambda a, b: jnp.sum(a * b, 1) / (jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1))

    def loss(p):
        logits, z = toy_mlp(p, x)
        pos, neg = (cos(z, toy_mlp(other, x)[1]) / TAU for other in (glob, prev))
        con = jnp.logaddexp(pos, neg) - pos
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y) + MU * con)

    return to_np(jax.grad(loss)(params))


def reference_moon(fed, model_vars):
    """``(server params, [each client's last trained params or None])`` after ``ROUNDS`` rounds."""
    w, prev = to_np(model_vars.params), [None] * NUM_CLIENTS
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, PER_ROUND)
        deltas = []
        for k in map(int, sampled):
            _, batches = client_schedule(fed, r, k, PER_ROUND)
            before, p = w if prev[k] is None else prev[k], w
            for batch in batches:
                g = moon_grad(fed, p, w, before, batch)
                p = jax.tree.map(lambda a, gi: a - LR * gi, p, g)
            prev[k] = p
            deltas.append(jax.tree.map(lambda a, b, n=float(SIZES[k]): n * (a - b), p, w))
        n = float(SIZES[sampled].sum())
        w = jax.tree.map(lambda wi, *d, n=n: wi + sum(d) / n, w, *deltas)
    return w, prev


def test_moon_equals_reference(toy):
    fed, model, mv = toy
    algorithm = moon(model, optax.sgd(LR), mu=MU, tau=TAU)
    server, clients = run_engine(algorithm, fed, mv, PER_ROUND, 1, ROUNDS)
    w, prev = reference_moon(fed, mv)
    assert_close(server.model.params, w)
    assert clients.trained.tolist() == [p is not None for p in prev] == [True] * 3
    for k in range(NUM_CLIENTS):
        assert_close(jax.tree.map(lambda a, k=k: a[k], clients.model.params), prev[k])


@pytest.mark.parametrize(("name", "kwargs"), [("mlp", {"hidden": (6,)}), ("bn_cnn", {"width": 2})])
def test_represent_is_apply_plus_the_classifier_input(name, kwargs):
    model = get_model(name, 4, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
    mv = model.init(jax.random.PRNGKey(1), x[:1])
    classifier = mv.params["Dense_1"]
    both = jax.jit(lambda *a: (model.apply(*a, KEY), model.represent(*a, KEY)), static_argnums=2)
    for train in (False, True):
        (logits, state), (same_logits, z, same_state) = both(mv, x, train)
        assert_close(same_logits, to_np(logits))
        assert_close(same_state, to_np(state))
        assert_close(z @ classifier["kernel"] + classifier["bias"], to_np(logits))


class Plain(nn.Module):
    """A classifier that sows no representation."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(4)(x.reshape((x.shape[0], -1)))


def test_a_model_without_a_representation_is_a_config_error(toy):
    fed, model, mv = toy
    with pytest.raises(ConfigError, match="sows no representation"):
        moon(model._replace(represent=None), optax.sgd(LR))
    plain = from_flax("plain", Plain())
    with pytest.raises(ConfigError, match="model='plain'"):
        run_engine(
            moon(plain, optax.sgd(LR)), fed, plain.init(jax.random.PRNGKey(0), fed.x[:1]), 2, 1
        )


def test_moon_runs_from_the_cli_under_dp(tmp_path):
    argv = ["run", "--config=configs/fedavg.py:smoke", "--config.algorithm=moon"]
    assert main([*argv, "--config.dp_clip=1.0", f"--workdir={tmp_path / 'run'}"]) == 0


def test_moon_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = run_sweep_cells(tmp_path, '[{"algorithm": "moon", "moon.mu": m} for m in (0.0, 5.0)]')
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]
