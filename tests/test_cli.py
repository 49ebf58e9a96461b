"""The command line: bad input exits 2 with one line and leaves no workdir; smoke runs write the
contract's files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.py")
FEDAVG = str(ROOT / "configs/fedavg.py")
CONTRACT_FIELDS = {
    "round", "wall_s", "loss", "global_acc", "personal_acc_mean", "personal_acc_worst10",
    "up_mb", "down_mb", "model_mb", "density", "params", "clients_failed",
}  # fmt: skip

BAD_INPUTS = [
    ([f"--config={FEDAVG}:smoke,algorithm=fedmagic"], "algorithm='fedmagic'"),
    ([f"--config={FEDAVG}:smoke", "--config.model=resnet900"], "model='resnet900'"),
    ([f"--config={FEDAVG}:smoke", "--config.dataset=imagenet22k"], "dataset='imagenet22k'"),
    ([f"--config={FEDAVG}:smoke", "--config.partition=zipf"], "partition='zipf'"),
    ([f"--config={FEDAVG}:smoke", "--config.alpha=0"], "alpha=0.0"),
    ([f"--config={FEDAVG}:smoke", "--config.alpha=-1.5"], "alpha=-1.5"),
    ([f"--config={FEDAVG}:smoke", "--config.num_clients=100000"], "num_clients=100000"),
    ([f"--config={FEDAVG}:smoke", "--config.client_fraction=1.5"], "client_fraction=1.5"),
    ([f"--config={FEDAVG}:smoke", "--config.client_fraction=0"], "client_fraction=0.0"),
    ([f"--config={FEDAVG}:smoke", "--config.clients_per_round=50"], "clients_per_round=50"),
    ([f"--config={FEDAVG}:smoke", "--config.local_epochs=0"], "local_epochs=0"),
    ([f"--config={FEDAVG}:smoke", "--config.batch_size=-4"], "batch_size=-4"),
    ([f"--config={FEDAVG}:smoke", "--config.rounds=0"], "rounds=0"),
    ([f"--config={FEDAVG}:smoke", "--config.client_lr=-0.1"], "client_lr=-0.1"),
    ([f"--config={FEDAVG}:smoke", "--config.client_optimizer=sgdd"], "client_optimizer='sgdd'"),
    ([f"--config={FEDAVG}:smoke", "--config.server_momentum=1.0"], "server_momentum=1.0"),
    ([f"--config={FEDAVG}:smoke,algorithm=scaffold", "--config.client_optimizer=adam"], "scaffold"),
    ([f"--config={FEDAVG}:smoke", "--config.no_such_key=1"], "no_such_key"),
    ([f"--config={FEDAVG}:smoke", "--config.local_epochs=two"], "local_epochs"),
    ([f"--config={FEDAVG}:smoke,bogus_key=3"], "bogus_key"),
    ([f"--config={FEDAVG}:smoke", "--config.model_kwargs.depth=3"], "depth"),
    (["--config=configs/does_not_exist.py"], "does_not_exist.py"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(flags, named, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", *flags, f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fedsim: error: ") and named in err, err
    assert not workdir.exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["run", f"--config={QUICK}:smoke"],
        ["run", "--workdir=/tmp/x"],
        ["run", "--bogus"],
    ],
)
def test_bad_command_line_exits_2(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert main(["run", f"--config={QUICK}:smoke", f"--workdir={tmp_path}"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


def read_run(workdir):
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return metrics, json.loads((workdir / "summary.json").read_text())


def test_quickstart_smoke_writes_contract_files(tmp_path):
    workdir = tmp_path / "qs"
    assert main(["run", f"--config={QUICK}:smoke", f"--workdir={workdir}"]) == 0
    metrics, summary = read_run(workdir)
    assert [m["round"] for m in metrics] == [1, 2]
    assert set(metrics[-1]) >= CONTRACT_FIELDS
    assert {"compile_s", "wall_s", "rounds", "samples_per_s", "epsilon"} <= set(summary)
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_clients"] == 10 and config["model"] == "cnn"
    # dense traffic: 3 clients x 2 rounds x the fp32 model, exact
    assert metrics[-1]["up_mb"] == pytest.approx(6 * metrics[-1]["model_mb"])
    assert metrics[-1]["model_mb"] == pytest.approx(4 * metrics[-1]["params"] / 1e6)


@pytest.mark.parametrize(
    "algorithm", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"]
)
def test_every_algorithm_smoke_run(algorithm, tmp_path):
    workdir = tmp_path / algorithm
    argv = ["run", f"--config={FEDAVG}:smoke,algorithm={algorithm}", f"--workdir={workdir}"]
    assert main(argv) == 0
    metrics, _ = read_run(workdir)
    assert all(0.0 <= m["global_acc"] <= 1.0 for m in metrics)
    scale = 2 if algorithm == "scaffold" else 1
    assert metrics[-1]["down_mb"] == pytest.approx(scale * 6 * metrics[-1]["model_mb"])


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim", "run", f"--config={QUICK}:smoke", "--config.alpha=-1",
         f"--workdir={tmp_path / 'x'}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fedsim: error: alpha=-1.0 must be > 0"
