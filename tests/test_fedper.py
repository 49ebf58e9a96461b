"""FedPer (Arivazhagan et al. 2019): the vmapped engine equals a plain per-client loop on three toy
clients (TinyBN: Dense_0, BatchNorm_0, Dense_1; the head is Dense_1), counts only the base's bytes,
and runs from the CLI, under DP and as a vmapped sweep."""

import json

import numpy as np
import optax
import pytest
import test_fedltn_reference
from test_engine_reference import LR, NUM_CLIENTS, ROUNDS
from test_grid import run_sweep_cells
from test_personalised_reference import (
    assert_close,
    engine_personal,
    f64,
    local_batches,
    run_engine,
    sampled_clients,
    sgd,
    weighted_mean,
)

from fedsim.algorithms.fedper import fedper, head_layers
from fedsim.cli import main
from fedsim.errors import ConfigError
from fedsim.models.base import ModelVars

toy = test_fedltn_reference.toy  # three clients with validation splits, TinyBN
HEAD = "Dense_1"


def joint(model, fed, start, state, r, c, per_round):
    """FedPer's local training: SGD on base and head together over the round's batches."""
    return sgd(model, fed, start, state, local_batches(fed, r, c, per_round))


def reference_fedper(model, fed, init, per_round, local=joint):
    """Each sampled client trains (server base, own head) with ``local``, keeps its head; the server
    takes the ``n_k``-weighted mean of the bases and statistics and keeps its own (initial) head."""
    w_g, s_g = f64(init.params), f64(init.state)
    heads = [w_g[HEAD]] * NUM_CLIENTS
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            w, s = local(model, fed, {**w_g, HEAD: heads[c]}, s_g, r, c, per_round)
            heads[c] = w[HEAD]
            trained.append(w)
            states.append(s)
            weights.append(float(fed.num_examples[c]))
        w_g = {**weighted_mean(trained, weights), HEAD: w_g[HEAD]}
        s_g = weighted_mean(states, weights)
    return (w_g, s_g), heads


def check_against_reference(algorithm, toy, per_round, chunk, local=joint):
    """Server model, every client's head and every deployed model after ``ROUNDS`` rounds."""
    fed, model, init = toy
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    (w_g, s_g), heads = reference_fedper(model, fed, init, per_round, local)
    assert_close(server.model, ModelVars(w_g, s_g))
    for row, head in zip(rows, heads, strict=True):
        assert_close(row, {HEAD: head})
    deployed = [ModelVars({**w_g, HEAD: head}, s_g) for head in heads]
    for got, want in zip(engine_personal(algorithm, server, rows, fed), deployed, strict=True):
        assert_close(got, want)
    assert np.ptp(np.stack([row[HEAD]["kernel"] for row in rows]), axis=0).max() > 0


def test_fedper_matches_python_loop(toy):
    check_against_reference(fedper(toy[1], optax.sgd(LR)), toy, 2, 2)


def test_head_is_the_last_dense_layers_by_index():
    params = {f"Dense_{i}": {} for i in (0, 2, 9, 10)} | {"Conv2D_11": {}}
    assert head_layers(params, 2, "fedper") == ("Dense_9", "Dense_10")
    with pytest.raises(ConfigError, match=r"fedper.personal_layers=5, but the model has 4"):
        head_layers(params, 5, "fedper")


def run_smoke(tmp_path, algorithm, *extra) -> dict:
    """``fedsim run`` of the smoke config with ``algorithm``: it exits 0; its summary."""
    argv = ["run", "--config=configs/fedavg.py:smoke", f"--config.algorithm={algorithm}", *extra]
    assert main([*argv, f"--workdir={tmp_path}"]) == 0
    return json.loads((tmp_path / "summary.json").read_text())


def check_personal_sweep(tmp_path, capsys, cells: str):
    """``fedsim sweep`` over two ``cells`` trains one vmapped grid whose clients' models differ."""
    cells = run_sweep_cells(tmp_path, cells)
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["personal_acc_mean"] != cells[1]["summary"]["personal_acc_mean"]


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0"]])
def test_fedper_runs_from_the_cli_and_sends_the_base_only(tmp_path, extra):
    summary = run_smoke(tmp_path, "fedper", *extra)
    base = 784 * 16 + 16  # mnist_subset pixels -> 16 hidden units; the 16 -> 10 head stays home
    assert summary["up_mb"] == pytest.approx(2 * 3 * 4 * base / 1e6)  # rounds x clients x 4 B


def test_fedper_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = '[{"algorithm": "fedper", "fedper.server_lr": s} for s in (0.5, 1.0)]'
    check_personal_sweep(tmp_path, capsys, cells)
