"""Sweep cells that differ only in seeds or numeric hyper-parameters train as one vmapped program
(fedsim.engine.grid) and give each cell's own run."""

import csv
import json

import pytest
from test_traces import smoke_config

from fedsim.cli import main
from fedsim.engine import loop
from fedsim.engine.grid import Grid, NotBatchable, check_batchable

FIELDS = ("global_acc", "personal_acc_mean", "up_mb", "loss")


JUMP_START = {"jump_start_rounds": 2, "val_fraction": 0.2, "prune_threshold": 0.0}


@pytest.mark.parametrize(
    "algorithm, hparam, values, extra",
    [
        ("fedavg", "client_lr", (0.05, 0.05, 0.1), {}),
        ("ditto", "ditto_lambda", (0.1, 0.5, 0.5), {}),
        ("fedltn", "client_lr", (0.05, 0.05, 0.1), JUMP_START),  # with its warm-up round
    ],
)
def test_grid_cells_equal_their_own_runs(algorithm, hparam, values, extra):
    configs = [
        smoke_config(algorithm=algorithm, seed=seed, data_seed=0, **{hparam: value}, **extra)
        for seed, value in zip((0, 1, 2), values, strict=True)
    ]
    grid = Grid(configs)
    rows = [r for _, r in grid.records()]
    assert [r is not None for r in rows[1]] == [True] * 3  # eval_every=2
    for config, summary in zip(configs, grid.summaries, strict=True):
        alone = loop.Experiment(config)
        *_, last = alone.records()
        for field in FIELDS:
            assert summary[field] == pytest.approx(alone.summary[field], rel=1e-5, abs=1e-6), field
    assert len({s["global_acc"] for s in grid.summaries}) > 1  # the cells really differ


def test_cells_that_differ_in_structure_or_data_shape_are_not_batched():
    with pytest.raises(NotBatchable, match="batch_size"):
        check_batchable([smoke_config(), smoke_config(batch_size=8)])
    with pytest.raises(NotBatchable, match="differ in shape"):  # each seed its own partition
        Grid([smoke_config(seed=0), smoke_config(seed=1)])


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
