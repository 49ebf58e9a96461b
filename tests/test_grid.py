"""Sweep cells that differ only in seeds or numeric hyper-parameters train as one vmapped program
(fedsim.engine.grid) and give each cell's own run."""

import csv
import json

import pytest
from test_traces import run_all, smoke_config

from fedsim.cli import main
from fedsim.engine import loop, setup
from fedsim.engine.grid import NotBatchable, check_batchable

FIELDS = ("global_acc", "personal_acc_mean", "up_mb", "loss")


JUMP_START = {"fedltn.jump_start_rounds": 2, "val_fraction": 0.2, "fedltn.prune_threshold": 0.0}


@pytest.mark.parametrize(
    "algorithm, hparam, values, extra",
    [
        ("fedavg", "client_lr", (0.05, 0.05, 0.1), {}),
        ("ditto", "ditto.lam", (0.1, 0.5, 0.5), {}),
        ("fedprox", "fedprox.mu", (0.0, 0.1, 1.0), {}),  # was a TracerBoolConversionError
        ("fedltn", "client_lr", (0.05, 0.05, 0.1), JUMP_START),  # with its warm-up round
    ],
)
def test_grid_cells_equal_their_own_runs(algorithm, hparam, values, extra):
    configs = [
        smoke_config(algorithm=algorithm, seed=seed, data_seed=0, **{hparam: value}, **extra)
        for seed, value in zip((0, 1, 2), values, strict=True)
    ]
    check_batchable(configs)
    records = list(loop.run([setup.build_experiment(c) for c in configs]))
    assert [r is not None for r in records[1].rows] == [True] * 3  # eval_every=2
    summaries = records[-1].summaries
    for config, summary in zip(configs, summaries, strict=True):
        alone = run_all(config)[1][-1].summaries[0]
        for field in FIELDS:
            assert summary[field] == pytest.approx(alone[field], rel=1e-5, abs=1e-6), field
    assert len({s["global_acc"] for s in summaries}) > 1  # the cells really differ


def test_cells_that_differ_in_structure_or_data_shape_are_not_batched():
    with pytest.raises(NotBatchable, match="batch_size"):
        check_batchable([smoke_config(), smoke_config(batch_size=8)])
    with pytest.raises(NotBatchable, match="fedltn.density_budgets"):  # tuples are not traced
        check_batchable([smoke_config(algorithm="fedltn", **{"fedltn.density_budgets": b})
                         for b in ((), (1.0, 0.5))])  # fmt: skip
    experiments = [setup.build_experiment(smoke_config(seed=s)) for s in (0, 1)]
    with pytest.raises(NotBatchable, match="differ in shape"):  # each seed its own partition
        next(loop.run(experiments))


SWEEP_CONFIG = """
from fedsim.config import base_config


def get_config(arg=None):
    config = base_config()
    config.update(dataset="digits", model="mlp", num_clients=6, clients_per_round=3, rounds=2,
                  local_epochs=1, batch_size=16, eval_every=1, chunk_size=2, val_fraction=0.2)
    config.model_kwargs = {{"hidden": (8,)}}
    return config.lock()


def get_sweep():
    return {cells}
"""


def run_sweep_cells(tmp_path, cells: str):
    path = tmp_path / "grid_config.py"
    path.write_text(SWEEP_CONFIG.format(cells=cells))
    assert main(["sweep", f"--config={path}", f"--workdir={tmp_path / 'sweep'}"]) == 0
    return json.loads((tmp_path / "sweep" / "sweep.json").read_text())


def test_fedprox_mu_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = run_sweep_cells(
        tmp_path, '[{"algorithm": "fedprox", "fedprox.mu": m} for m in (0.0, 0.5)]'
    )
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert [c["summary"]["grid_cells"] for c in cells] == [2, 2]
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]


def test_sweep_over_a_tuple_valued_key(tmp_path, capsys):
    budgets = "[{'algorithm': 'fedltn', 'fedltn.density_budgets': b} for b in ((), (1.0, 0.5))]"
    cells = run_sweep_cells(tmp_path, budgets)
    assert "one after another" in capsys.readouterr().out
    saved = json.loads((tmp_path / "sweep" / cells[1]["cell"] / "config.json").read_text())
    assert saved["fedltn"]["density_budgets"] == [1.0, 0.5]
    assert (
        "personal_acc_b50" in cells[1]["summary"] and "personal_acc_b50" not in cells[0]["summary"]
    )


def test_sweep_trains_seeds_as_one_grid_and_writes_csv_and_figure(tmp_path, capsys):
    args = ["sweep", "--config=configs/quickstart.py:smoke", "--config.rounds=1",
            f"--workdir={tmp_path}"]  # fmt: skip
    assert main(args) == 0
    assert "8 cells trained as one vmapped grid" in capsys.readouterr().out
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == list(range(8))
    assert all(r["grid_cells"] == "8" and 0 <= float(r["global_acc"]) <= 1 for r in rows)
    assert (tmp_path / "sweep.png").stat().st_size > 0
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[2].startswith("| data_seed=0 | 8 | ") and " ± " in table[2]  # seeds pooled
    assert main(["plot", "--workdir", str(tmp_path), "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "accuracy_vs_round.png").stat().st_size > 0
    cell = tmp_path / "seed=3-data_seed=0"
    assert {"config.json", "metrics.jsonl", "summary.json", "model.msgpack"} <= {
        p.name for p in cell.iterdir()
    }
    assert json.loads((cell / "config.json").read_text())["seed"] == 3
    before = (tmp_path / "sweep.json").read_text(), (cell / "metrics.jsonl").stat().st_mtime_ns
    assert main(args) == 0  # every cell finished: nothing runs again
    assert "vmapped grid" not in capsys.readouterr().out
    after = (tmp_path / "sweep.json").read_text(), (cell / "metrics.jsonl").stat().st_mtime_ns
    assert after == before
