"""FedNova (Wang et al. 2020): the vmapped engine equals a plain per-client loop with normalised
averaging on three toy clients of different sizes (so different local step counts), and it runs
from the CLI, under DP, as a vmapped sweep and sharded."""

import jax
import numpy as np
import optax
import pytest
from test_engine_reference import (
    LR,
    ROUNDS,
    SIZES,
    assert_close,
    client_schedule,
    grad_at,
    run_engine,
    to_np,
)
from test_grid import run_sweep_cells
from test_sharding import final_state
from test_traces import smoke_config

from fedsim.algorithms.fednova import fednova, normalizer
from fedsim.cli import main


def reference_local(model, fed, start, batches, rho):
    """Heavy-ball SGD (optax's trace: v = g + rho v; w -= lr v)."""
    params, velocity = start, jax.tree.map(np.zeros_like, start)
    for batch in batches:
        g = grad_at(model, fed, params, batch)
        velocity = jax.tree.map(lambda v, gi: gi + rho * v, velocity, g)
        params = jax.tree.map(lambda p, v: p - LR * v, params, velocity)
    return params


def reference_fednova(model, fed, model_vars, rho):
    """``x <- x + tau_eff sum_i p_i (x_i - x) / ||a_i||_1`` with ``a_ij = (1 - rho^(tau_i - j)) /
    (1 - rho)`` summed explicitly, ``tau_eff = sum_i p_i ||a_i||_1``."""
    w = to_np(model_vars.params)
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, 3)
        changes, norms, weights = [], [], []
        for c in sampled:
            _, batches = client_schedule(fed, r, int(c), 3)
            local = reference_local(model, fed, w, batches, rho)
            tau = len(batches)
            norms.append(sum((1 - rho ** (tau - j)) / (1 - rho) for j in range(tau)))
            changes.append(jax.tree.map(np.subtract, local, w))
            weights.append(float(SIZES[c]) / float(SIZES[sampled].sum()))
        tau_eff = sum(p * a for p, a in zip(weights, norms, strict=True))
        scales = tuple(tau_eff * p / a for p, a in zip(weights, norms, strict=True))
        step = lambda x, *d, s=scales: x + sum(si * di for si, di in zip(s, d, strict=True))
        w = jax.tree.map(step, w, *changes)
    return w


@pytest.mark.parametrize(("rho", "chunk_size"), [(0.0, 1), (0.0, 3), (0.5, 2)])
def test_fednova_equals_reference(toy, rho, chunk_size):
    fed, model, mv = toy
    local = optax.sgd(LR, momentum=rho or None)
    server, _ = run_engine(fednova(model, local, momentum=rho), fed, mv, 3, chunk_size)
    assert_close(server.model.params, reference_fednova(model, fed, mv, rho))


def test_normalizer_is_the_sum_of_the_step_weights():
    for rho in (0.0, 0.3, 0.9):
        for tau in (1, 4, 17):
            explicit = sum((1 - rho ** (tau - j)) / (1 - rho) for j in range(tau))
            got = float(normalizer(np.int32(tau), rho))
            assert got == pytest.approx(explicit, rel=1e-5)


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0", "--config.client_momentum=0.5"]])
def test_fednova_runs_from_the_cli(tmp_path, extra):
    argv = ["run", "--config=configs/fedavg.py:smoke", "--config.algorithm=fednova", *extra]
    assert main([*argv, f"--workdir={tmp_path / 'run'}"]) == 0


def test_fednova_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = run_sweep_cells(
        tmp_path, '[{"algorithm": "fednova", "fednova.server_lr": s} for s in (0.5, 1.0)]'
    )
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]


def test_fednova_sharded_equals_one_device():
    one, one_state = final_state(smoke_config(algorithm="fednova", clients_per_round=5, devices=1))
    eight, eight_state = final_state(
        smoke_config(algorithm="fednova", clients_per_round=5, devices=8)
    )
    assert eight["global_acc"] == pytest.approx(one["global_acc"], abs=1e-6)
    for a, b in zip(
        *(jax.tree.leaves(s.server_state) for s in (one_state, eight_state)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
