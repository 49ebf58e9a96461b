"""The personalised and sparse algorithms end to end (smoke scale): metrics, traffic rules, masks,
the validation split, and ``fedsim sweep``."""

import json
import runpy

import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.algorithms.base import PersonalScores
from fedsim.algorithms.fedltn import fedltn
from fedsim.cli import main
from fedsim.compress import masks
from fedsim.config import load_config
from fedsim.data.datasets import load_dataset
from fedsim.data.federated import hold_out_validation, make_federation
from fedsim.engine import loop, setup
from fedsim.models import get_model

METHODS = runpy.run_path("configs/fedltn.py")["METHODS"]


def run(arg):
    experiment = setup.build_experiment(load_config(f"configs/fedltn.py:smoke,{arg}"))
    records = list(loop.run(experiment))
    return experiment, records[-1]


@pytest.mark.parametrize("algorithm", METHODS)
def test_every_method_runs_and_reports_the_contract_fields(algorithm):
    experiment, last = run(f"algorithm={algorithm}")
    m = last.metrics
    for key in ("personal_acc_mean", "personal_acc_worst10", "model_mb", "density", "up_mb"):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["personal_acc_worst10"] <= m["personal_acc_mean"] <= 1.0
    if algorithm == "local_only":
        assert m["up_mb"] == m["down_mb"] == 0.0
    if algorithm in ("fedltn", "lotteryfl", "subfedavg"):
        assert m["model_mb_values"] <= m["model_mb"]


def test_fedltn_prunes_keeps_zeros_and_counts_sparse_traffic():
    experiment, last = run("algorithm=fedltn,rounds=4")
    fedavg_experiment, fedavg_last = run("algorithm=fedavg,rounds=4")
    assert last.metrics["density"] < 1.0
    assert last.metrics["model_mb"] < fedavg_last.metrics["model_mb"]
    assert last.traffic_mb[0] < fedavg_last.traffic_mb[0]
    clients = last.state(0).client_states
    for p, m in zip(jax.tree.leaves(clients.params), jax.tree.leaves(clients.mask), strict=True):
        m = np.asarray(m).reshape(m.shape + (1,) * (p.ndim - m.ndim))
        assert not np.any(np.asarray(p)[~np.broadcast_to(m, p.shape)])
    # personal normalisation differs between clients that trained; it never reaches the server
    scales = [np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(clients.params)
              if masks.is_norm_path(path)]  # fmt: skip
    assert any(np.ptp(s, axis=0).max() > 0 for s in scales)


def test_jump_start_uploads_once_before_round_1_and_starts_pruned():
    _, plain = run("algorithm=fedltn,rounds=1,eval_every=1")
    experiment, jump = run("algorithm=fedltn,rounds=1,eval_every=1,fedltn.jump_start_rounds=3")
    # every client (8) uploaded its warm-up model once; round 1 downloads a sparse server model
    assert jump.metrics["up_mb"] > plain.metrics["up_mb"]
    assert jump.metrics["down_mb"] < plain.metrics["down_mb"]
    # three virtual rounds (prune_rate 0.2, target 0.5 in smoke) left every client near the target
    assert jump.metrics["density"] < 0.6 < plain.metrics["density"]
    assert np.all(np.asarray(jump.state(0).client_states.joined))
    local_epochs = experiment.config.local_epochs  # the warm-up's training is counted
    assert jump.state(0).counters["samples"] > 3 * local_epochs * experiment.data.num_examples.sum()


def test_lean_start_reports_each_tier_within_its_budget():
    _, last = run("algorithm=fedltn,lean=True,rounds=1,eval_every=1,clients_per_round=8")
    m = last.metrics  # every client joined in round 1 and pruned to its tier's budget
    assert m["density_b25"] <= 0.25 + 1e-3 and m["density_b50"] <= 0.5 + 1e-3
    assert m["model_mb_b25"] < m["model_mb_b50"] < m["model_mb_b100"]
    assert all(0 <= m[f"personal_acc_b{p}"] <= 1 for p in (25, 50, 100))


def test_fedbn_traffic_leaves_out_normalisation():
    _, bn = run("algorithm=fedbn,rounds=1,eval_every=1")
    _, avg = run("algorithm=fedavg,rounds=1,eval_every=1")
    assert bn.metrics["up_mb"] < avg.metrics["up_mb"]


@settings(max_examples=10, deadline=None)
@given(st.floats(0.05, 0.5), st.integers(0, 1000))
def test_validation_split_loses_and_duplicates_nothing(fraction, seed):
    data = make_federation(load_dataset("digits"), "label_quantity", 12, seed, labels_per_client=2)
    split = hold_out_validation(data, fraction, seed)
    again = hold_out_validation(data, fraction, seed)
    np.testing.assert_array_equal(split.client_val_indices, again.client_val_indices)
    for c in range(12):
        train = split.client_indices[c, : split.num_examples[c]]
        val = split.client_val_indices[c, : split.num_val[c]]
        whole = data.client_indices[c, : data.num_examples[c]]
        assert sorted([*train, *val]) == sorted(whole)
        assert len(val) == min(max(round(fraction * len(whole)), 1), len(whole) - 1)


def test_sweep_runs_every_cell_and_skips_finished_ones(tmp_path, capsys):
    args = ["sweep", "--config=configs/subfedavg.py:smoke", "--config.rounds=1",
            "--config.eval_every=1", f"--workdir={tmp_path}"]  # fmt: skip
    assert main(args) == 0
    cells = json.loads((tmp_path / "sweep.json").read_text())
    assert [c["cell"] for c in cells] == [
        "seed=0",
        "seed=1",
        "seed=2",
        "subfedavg.prune_rate=0.05",
        "subfedavg.prune_rate=0.2",
    ]
    saved = json.loads((tmp_path / "subfedavg.prune_rate=0.05" / "config.json").read_text())
    assert saved["subfedavg"]["prune_rate"] == 0.05
    assert main(args) == 0  # finished cells return their summaries
    assert json.loads((tmp_path / "sweep.json").read_text()) == cells
    no_sweep = tmp_path / "no_sweep.py"  # every shipped config has a get_sweep()
    no_sweep.write_text("from fedsim.config import base_config\n\n\ndef get_config(arg=None):\n"
                        "    return base_config()\n")  # fmt: skip
    assert main(["sweep", f"--config={no_sweep}", f"--workdir={tmp_path}/q"]) == 2
    assert "get_sweep" in capsys.readouterr().err


def test_fedltn_report_is_each_tiers_mean():
    model = get_model("mlp", 4, hidden=(5,))
    algorithm = fedltn(model, optax.sgd(0.1), density_budgets=(1.0, 0.5, 0.25))
    # clients 0..4 sit in tiers 1.0, 0.5, 0.25, 1.0, 0.5
    scores = PersonalScores(
        accuracy=np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
        model_bytes=np.array([4_000_000, 2_000_000, 1_000_000, 3_000_000, 1_000_000]),
        values_bytes=np.array([1, 1, 1, 1, 1]),
        density=np.array([1.0, 0.5, 0.25, 0.9, 0.4]),
    )
    want = {
        "personal_acc_b100": 0.75,
        "model_mb_b100": 3.5,
        "density_b100": 0.95,
        "personal_acc_b50": 0.65,
        "model_mb_b50": 1.5,
        "density_b50": 0.45,
        "personal_acc_b25": 0.7,
        "model_mb_b25": 1.0,
        "density_b25": 0.25,
    }
    report = algorithm.report(None, scores)
    assert list(report) == list(want)
    assert report == pytest.approx(want)
    assert fedltn(model, optax.sgd(0.1)).report is None
