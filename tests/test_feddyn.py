"""FedDyn (Acar et al. 2021): the vmapped engine equals a plain per-client loop of Algorithm 1 on
three toy clients (server model, server state h and every client's gradient state), under full and
partial participation, and it runs from the CLI under DP and as a vmapped sweep over alpha."""

import jax
import numpy as np
import optax
import pytest
from test_engine_reference import (
    LR,
    NUM_CLIENTS,
    assert_close,
    client_schedule,
    reference_local,
    run_engine,
    to_np,
)
from test_grid import run_sweep_cells

from fedsim.algorithms.feddyn import feddyn
from fedsim.cli import main

ALPHA, ROUNDS = 0.3, 3


def reference_feddyn(model, fed, model_vars, clients_per_round):
    """Algorithm 1 in numpy: ``(theta, h, [g_k])`` after ``ROUNDS`` rounds."""
    w = to_np(model_vars.params)
    h = jax.tree.map(np.zeros_like, w)
    g = [h] * NUM_CLIENTS
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, clients_per_round)
        trained = []
        for k in map(int, sampled):
            _, batches = client_schedule(fed, r, k, clients_per_round)
            dyn = lambda p, gk=g[k], w=w: jax.tree.map(
                lambda a, b, c: ALPHA * (a - c) - b, p, gk, w
            )
            theta = reference_local(model, fed, w, batches, dyn)
            g[k] = jax.tree.map(lambda b, t, c: b - ALPHA * (t - c), g[k], theta, w)
            trained.append(theta)
        h = jax.tree.map(
            lambda hi, c, *t: hi - ALPHA / NUM_CLIENTS * sum(ti - c for ti in t), h, w, *trained
        )
        w = jax.tree.map(lambda hi, *t: sum(t) / len(t) - hi / ALPHA, h, *trained)
    return w, h, g


@pytest.mark.parametrize(("clients_per_round", "chunk_size"), [(3, 1), (2, 2)])
def test_feddyn_equals_reference(toy, clients_per_round, chunk_size):
    fed, model, mv = toy
    algorithm = feddyn(model, optax.sgd(LR), NUM_CLIENTS, ALPHA)
    server, clients = run_engine(algorithm, fed, mv, clients_per_round, chunk_size, ROUNDS)
    w, h, g = reference_feddyn(model, fed, mv, clients_per_round)
    assert_close(server.model.params, w)
    assert_close(server.h, h)
    for k in range(NUM_CLIENTS):
        assert_close(jax.tree.map(lambda a, k=k: a[k], clients), g[k])


def test_feddyn_runs_from_the_cli_under_dp(tmp_path):
    argv = ["run", "--config=configs/fedavg.py:smoke", "--config.algorithm=feddyn"]
    assert main([*argv, "--config.dp_clip=1.0", f"--workdir={tmp_path / 'run'}"]) == 0


def test_feddyn_alpha_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = run_sweep_cells(
        tmp_path, '[{"algorithm": "feddyn", "feddyn.alpha": a} for a in (0.01, 0.3)]'
    )
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]
