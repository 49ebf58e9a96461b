"""APFL (Deng et al. 2020): the vmapped engine equals a plain per-client loop (numpy SGD on w, on v
through the mixed model, and alpha's clipped gradient step) on three toy clients (TinyBN), and it runs
from the CLI, under DP and as a vmapped sweep."""

import jax
import numpy as np
import optax
import pytest
import test_fedltn_reference
from test_engine_reference import LR, NUM_CLIENTS, ROUNDS
from test_fedper import check_personal_sweep, run_smoke
from test_personalised_reference import (
    assert_close,
    engine_personal,
    f32,
    f64,
    local_batches,
    loss_grad,
    run_engine,
    sampled_clients,
    weighted_mean,
)

from fedsim.algorithms.apfl import apfl, within_unit_interval
from fedsim.models.base import ModelVars

toy = test_fedltn_reference.toy  # three clients with validation splits, TinyBN
ALPHA = 0.25


def mixed(alpha, v, w):
    return jax.tree.map(lambda a, b: alpha * a + (1 - alpha) * b, v, w)


def grad(model, fed, params, state, batch):
    g, new_state = loss_grad(model, f32(params), f32(state), fed.x[batch], fed.y[batch])
    return f64(g), f64(new_state)


def reference_client(model, fed, w, s, personal, batches, adapt):
    """Algorithm 1's local steps; ``personal = (v, mixed statistics, alpha)``."""
    v, sv, alpha = personal
    for batch in batches:
        vbar = mixed(alpha, v, w)
        g_w, s = grad(model, fed, w, s, batch)
        g_bar, sv = grad(model, fed, vbar, sv, batch)
        pairs = zip(*map(jax.tree.leaves, (v, w, g_bar)), strict=True)
        g_alpha = sum(np.sum((vi - wi) * gi) for vi, wi, gi in pairs)
        w = jax.tree.map(lambda p, g: p - LR * g, w, g_w)
        v = jax.tree.map(lambda p, g, a=alpha: p - LR * a * g, v, g_bar)
        alpha = float(np.clip(alpha - LR * g_alpha, 0, 1)) if adapt else alpha
    return (w, s), (v, sv, alpha)


def reference_apfl(model, fed, init, per_round, adapt):
    """The server averages the clients' ``w`` (and statistics) weighted by ``n_k``."""
    w_g, s_g = f64(init.params), f64(init.state)
    clients = [(w_g, s_g, ALPHA)] * NUM_CLIENTS
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            batches = local_batches(fed, r, c, per_round)
            (w, s), clients[c] = reference_client(model, fed, w_g, s_g, clients[c], batches, adapt)
            trained.append(w)
            states.append(s)
            weights.append(float(fed.num_examples[c]))
        w_g, s_g = weighted_mean(trained, weights), weighted_mean(states, weights)
    return (w_g, s_g), clients


@pytest.mark.parametrize(("adapt", "per_round", "chunk"), [(True, 2, 2), (False, 3, 1)])
def test_apfl_matches_python_loop(toy, adapt, per_round, chunk):
    fed, model, init = toy
    algorithm = apfl(model, optax.sgd(LR), LR, alpha=ALPHA, adapt_alpha=adapt)
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    (w_g, s_g), clients = reference_apfl(model, fed, init, per_round, adapt)
    assert_close(server.model, ModelVars(w_g, s_g))
    for row, (v, sv, alpha) in zip(rows, clients, strict=True):
        assert_close(row.personal, ModelVars(v, sv))
        assert float(row.alpha) == pytest.approx(alpha, rel=1e-4)
    deployed = [ModelVars(mixed(a, v, w_g), sv) for v, sv, a in clients]
    for got, want in zip(engine_personal(algorithm, server, rows, fed), deployed, strict=True):
        assert_close(got, want)
    alphas = {alpha for *_, alpha in clients}
    assert (alphas == {ALPHA}) != adapt, alphas  # adapted alphas moved, fixed ones did not


def test_alpha_step_stays_in_the_unit_interval():
    clip = within_unit_interval()
    params, updates = np.array([0.9, 0.1, 0.5]), np.array([0.5, -0.5, 0.2])
    moved, _ = clip.update(updates, clip.init(params), params)
    np.testing.assert_allclose(params + moved, [1.0, 0.0, 0.7])


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0", "--config.apfl.adapt_alpha=False"]])
def test_apfl_runs_from_the_cli(tmp_path, extra):
    run_smoke(tmp_path, "apfl", *extra)


def test_apfl_alpha_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = '[{"algorithm": "apfl", "apfl.alpha": a} for a in (0.25, 0.75)]'
    check_personal_sweep(tmp_path, capsys, cells)
