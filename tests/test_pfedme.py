"""pFedMe (T. Dinh et al. 2020): the vmapped engine equals a plain per-client loop (numpy gradient
steps on each batch's personal problem, then the local copy's envelope step, then the server's beta
mixing) on three toy clients (TinyBN), and it runs from the CLI, under DP and as a vmapped sweep."""

import jax
import optax
import pytest
import test_fedltn_reference
from test_engine_reference import LR, NUM_CLIENTS, ROUNDS
from test_fedper import check_personal_sweep, run_smoke
from test_personalised_reference import (
    assert_close,
    assert_deployed,
    f32,
    f64,
    local_batches,
    loss_grad,
    run_engine,
    sampled_clients,
    weighted_mean,
)

from fedsim.algorithms.pfedme import SPEC, pfedme
from fedsim.errors import ConfigError
from fedsim.models.base import ModelVars

toy = test_fedltn_reference.toy  # three clients with validation splits, TinyBN
LAM, INNER, PERSONAL_LR, BETA = 5.0, 3, 0.05, 1.5


def reference_client(model, fed, w, s, batches):
    """Algorithm 1's local rounds from the server's ``(w, s)``; theta starts at ``w``."""
    theta = w
    for batch in batches:
        for _ in range(INNER):
            g, s = loss_grad(model, f32(theta), f32(s), fed.x[batch], fed.y[batch])
            g, s = f64(g), f64(s)
            theta = jax.tree.map(
                lambda t, gi, wi: t - PERSONAL_LR * (gi + LAM * (t - wi)), theta, g, w
            )
        w = jax.tree.map(lambda wi, t: wi - LR * LAM * (wi - t), w, theta)
    return w, ModelVars(theta, s)


def reference_pfedme(model, fed, init, per_round):
    """The server mixes ``(1 - beta) w + beta`` times the clients' ``n_k``-weighted mean ``w_k``, and
    averages their statistics; a client's personal model is None until it is sampled."""
    w_g, s_g = f64(init.params), f64(init.state)
    personal = [None] * NUM_CLIENTS
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            w, personal[c] = reference_client(
                model, fed, w_g, s_g, local_batches(fed, r, c, per_round)
            )
            trained.append(w)
            states.append(personal[c].state)
            weights.append(float(fed.num_examples[c]))
        mean = weighted_mean(trained, weights)
        w_g = jax.tree.map(lambda old, new: (1 - BETA) * old + BETA * new, w_g, mean)
        s_g = weighted_mean(states, weights)
    return ModelVars(w_g, s_g), personal


@pytest.mark.parametrize(("per_round", "chunk"), [(1, 1), (3, 2)])
def test_pfedme_matches_python_loop(toy, per_round, chunk):
    fed, model, init = toy
    algorithm = pfedme(model, optax.sgd(LR), LAM, INNER, PERSONAL_LR, BETA)
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    global_model, personal = reference_pfedme(model, fed, init, per_round)
    assert_close(server.model, global_model)
    assert (None in personal) == (per_round == 1)  # never sampled: it deploys the server model
    for row, want in zip(rows, personal, strict=True):
        assert bool(row.trained) == (want is not None)
        assert_close(row.model, want or init)
    assert_deployed(algorithm, server, rows, fed, [want or global_model for want in personal])


def test_pfedme_checks_its_section():
    with pytest.raises(ConfigError, match="pfedme.inner_steps=0 must be > 0"):
        SPEC.check({**SPEC.hparams, "inner_steps": 0})


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0", "--config.pfedme.beta=2.0"]])
def test_pfedme_runs_from_the_cli(tmp_path, extra):
    run_smoke(tmp_path, "pfedme", *extra)


def test_pfedme_lam_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = '[{"algorithm": "pfedme", "pfedme.lam": lam} for lam in (1.0, 15.0)]'
    check_personal_sweep(tmp_path, capsys, cells)
