"""A run killed at any point (SIGKILL, not a clean stop) and resumed writes the same metrics as an
uninterrupted run, bit for bit on CPU (``wall_s`` aside); a different config is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs/fedavg.py")
ARGS = [
    f"--config={CONFIG}:smoke,algorithm=scaffold,dataset=digits",
    "--config.num_clients=12",
    "--config.clients_per_round=4",
    "--config.rounds=40",
    "--config.eval_every=1",
    "--config.checkpoint_every=1",
]


def metrics_without_time(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def lines(path):
    return path.read_text().count("\n") if path.exists() else 0


def kill_after(workdir, min_lines):
    """Starts ``fedsim run`` and SIGKILLs it once metrics.jsonl has ``min_lines`` lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim", "run", *ARGS, f"--workdir={workdir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while lines(workdir / "metrics.jsonl") < min_lines and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workdir / "summary.json").exists(), "killed too late: the run had finished"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    assert main(["run", *ARGS, f"--workdir={workdir}"]) == 0
    return metrics_without_time(workdir)


@pytest.mark.parametrize("kill_at", [3, 17])
def test_killed_then_resumed_equals_uninterrupted(uninterrupted, kill_at, tmp_path):
    workdir = tmp_path / "run"
    kill_after(workdir, kill_at)
    assert main(["run", *ARGS, f"--workdir={workdir}"]) == 0
    assert metrics_without_time(workdir) == uninterrupted
    assert len(uninterrupted) == 40
    # it really continued from a checkpoint (one per round, saved after the round's metrics line)
    resumed_from = json.loads((workdir / "summary.json").read_text())["resumed_from_round"]
    assert kill_at - 1 <= resumed_from < 40


def test_resume_with_another_config_is_refused(uninterrupted, tmp_path, capsys):
    workdir = tmp_path / "run"
    kill_after(workdir, 2)
    before = (workdir / "metrics.jsonl").read_text()
    assert main(["run", *ARGS, "--config.client_lr=0.5", f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err
    assert "different config (client_lr: 0.01 -> 0.5)" in err
    assert (workdir / "metrics.jsonl").read_text() == before


def test_finished_run_is_not_rerun(tmp_path):
    workdir = tmp_path / "run"
    short = [*ARGS, "--config.rounds=3"]
    assert main(["run", *short, f"--workdir={workdir}"]) == 0
    summary = (workdir / "summary.json").read_text()
    assert main(["run", *short, f"--workdir={workdir}"]) == 0
    assert (workdir / "summary.json").read_text() == summary


def test_a_checkpoint_from_before_a_new_counter_resumes_with_it_at_zero(tmp_path):
    import jax
    import numpy as np

    from fedsim.checkpoint import Checkpoints
    from fedsim.engine.loop import RunState

    server, clients = {"w": np.arange(3.0)}, {"v": np.ones((2, 2))}
    Checkpoints(tmp_path).save(RunState(5, server, clients, {"rounds": np.asarray(5)}))
    counters = {"rounds": np.asarray(0), "sim_time": np.asarray(0.0)}  # fedsim gained sim_time
    shapes = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    abstract = RunState(0, shapes(server), shapes(clients), shapes(counters))
    restored = Checkpoints(tmp_path).restore_latest(abstract)
    assert restored.round == 5 and int(restored.counters["rounds"]) == 5
    assert float(restored.counters["sim_time"]) == 0.0
    np.testing.assert_array_equal(restored.server_state["w"], server["w"])
