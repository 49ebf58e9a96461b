"""The command line: bad input exits 2 with one line and leaves no workdir; smoke runs write the
contract's files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    (
        [f"--config={FEDAVG}:smoke,algorithm=fedavgm", "--config.fedavgm.momentum=1.0"],
        "fedavgm.momentum=1.0",
    ),
    ([f"--config={FEDAVG}:smoke", "--config.prox_mu=0.1"], "fedprox.mu"),  # moved into a section
    ([f"--config={FEDAVG}:smoke,server_lr=0.5"], "fedavg.server_lr"),
    ([f"--config={FEDAVG}:smoke,fedprox.nu=1"], "fedprox.nu"),
    ([f"--config={FEDAVG}:smoke,algorithm=fedltn"], "val_fraction=0"),  # it needs a split
    ([f"--config={FEDAVG}:smoke,algorithm=scaffold", "--config.client_optimizer=adam"], "scaffold"),
    ([f"--config={FEDAVG}:smoke", "--config.no_such_key=1"], "no_such_key"),
    ([f"--config={FEDAVG}:smoke", "--config.local_epochs=two"], "local_epochs"),
    ([f"--config={FEDAVG}:smoke,bogus_key=3"], "bogus_key"),
    ([f"--config={FEDAVG}:smoke", "--config.model_kwargs.depth=3"], "depth"),
    (["--config=configs/does_not_exist.py"], "does_not_exist.py"),
    ([f"--config={FEDAVG}:smoke", "--config.dropout_prob=1.0"], "dropout_prob=1.0"),
    ([f"--config={FEDAVG}:smoke", "--config.straggler_work=0"], "straggler_work=0.0"),
    ([f"--config={FEDAVG}:smoke", "--config.poison_fraction=2"], "poison_fraction=2.0"),
    ([f"--config={FEDAVG}:smoke", "--config.checkpoint_every=-1"], "checkpoint_every=-1"),
    ([f"--config={FEDAVG}:smoke", "--config.seed=-3"], "seed=-3"),
    ([f"--config={FEDAVG}:smoke,partition=natural"], "partition='natural'"),
    ([f"--config={FEDAVG}:smoke,algorithm=fedadam", "--config.fedadam.tau=0"], "fedadam.tau=0.0"),
    ([f"--config={FEDAVG}:smoke,jump_start_rounds=3"], "fedltn.jump_start_rounds"),
    (
        [f"--config={FEDAVG}:smoke,algorithm=fedltn,fedltn.jump_start_rounds=-1,val_fraction=0.2"],
        "fedltn.jump_start_rounds=-1",
    ),
    ([f"--config={FEDAVG}:smoke,dataset=npz"], "data_path"),
    ([f"--config={FEDAVG}:smoke", "--config.moon.temperature=0"], "--config.moon.temperature"),
    (
        [f"--config={FEDAVG}:smoke,algorithm=fedavg_krum,fedavg_krum.byzantine=1"],
        "byzantine=1 with 3",
    ),
    ([f"--config={FEDAVG}:smoke,algorithm=fedavg_krum,fedavg_krum.multi=4"], "multi=4"),
    (
        [
            f"--config={FEDAVG}:smoke,client_lr_schedule=step,keep_client_optimizer_state",
            "--config.clients_per_round=10",
            "--config.train_examples=400",
            "--config.batch_size=64",
        ],
        "over 2 local steps",
    ),
    ([f"--config={FEDAVG}:smoke,dataset=npz", "--config.data_path=/no/such.npz"], "/no/such.npz"),
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
    assert "holds metrics but no config.json" in capsys.readouterr().err
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


def test_shakespeare_roles_smoke_run(tmp_path):
    workdir = tmp_path / "shakespeare"
    config = str(ROOT / "configs/shakespeare.py")
    assert main(["run", f"--config={config}:smoke", f"--workdir={workdir}"]) == 0
    metrics, _ = read_run(workdir)
    assert metrics[-1]["params"] > 0 and 0.0 <= metrics[-1]["global_acc"] <= 1.0


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim", "run", f"--config={QUICK}:smoke", "--config.alpha=-1",
         f"--workdir={tmp_path / 'x'}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fedsim: error: alpha=-1.0 must be > 0"


def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(60, 4, 4)).astype(np.float32),
        "y_train": np.arange(60) % 3,
        "x_test": rng.normal(size=(12, 4, 4)).astype(np.float32),
        "y_test": np.arange(12) % 3,
        "num_classes": np.asarray(3),
    }
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _nan_rows(rows):
    x = np.random.default_rng(0).normal(size=(60, 4, 4)).astype(np.float32)
    x[rows] = np.nan
    return x


MALFORMED_DATA = [
    ({"y_train": np.r_[np.arange(59) % 3, 7]}, "y_train[59]=7 is outside [0, 3)"),
    ({"y_test": np.r_[-1, np.arange(11) % 3]}, "y_test[0]=-1 is outside [0, 3)"),
    ({"x_train": _nan_rows([5])}, "non-finite (NaN/Inf) features in training example 5"),
    ({"x_test": np.full((12, 4, 4), np.inf, np.float32)}, "test example 0 has non-finite"),
    ({"y_test": None}, "lacks arrays ['y_test']"),
    ({"x_test": np.zeros((12, 5, 5), np.float32)}, "train and test example shapes differ"),
]


@pytest.mark.parametrize(("changes", "named"), MALFORMED_DATA)
def test_malformed_data_exits_2_naming_it(changes, named, tmp_path, capsys):
    data = _npz(tmp_path / "data.npz", **changes)
    workdir = tmp_path / "run"
    argv = [
        "run", f"--config={FEDAVG}:smoke,dataset=npz,partition=iid",
        f"--config.data_path={data}", f"--workdir={workdir}",
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not workdir.exists()


def test_nan_features_name_the_client(tmp_path, capsys):
    data = _npz(tmp_path / "data.npz", x_train=_nan_rows([5, 6]))
    argv = [
        "run", f"--config={FEDAVG}:smoke,dataset=npz,partition=iid",
        f"--config.data_path={data}", f"--workdir={tmp_path / 'run'}",
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: client ") and "(" in err


def test_users_npz_dataset_runs(tmp_path):
    data = _npz(tmp_path / "data.npz")
    workdir = tmp_path / "run"
    argv = [
        "run", f"--config={FEDAVG}:smoke,dataset=npz,partition=iid",
        f"--config.data_path={data}", f"--workdir={workdir}",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (workdir / "summary.json").exists()


def test_plot_draws_the_three_figures(tmp_path):
    workdir = tmp_path / "qs"
    assert main(["run", f"--config={QUICK}:smoke", f"--workdir={workdir}"]) == 0
    assert (
        main(["plot", "--workdir", str(workdir), str(workdir), "--out", str(tmp_path / "f")]) == 0
    )
    for name in ("accuracy_vs_round.png", "accuracy_vs_mb.png", "personal_acc_hist.png"):
        assert (tmp_path / "f" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list(workdir.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_plot_of_a_non_run_exits_2(tmp_path, capsys):
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_data_command_prints_and_plots_the_federation(tmp_path, capsys):
    argv = ["data", f"--config={QUICK}:smoke", f"--out={tmp_path}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "clients: 10" in out and "labels_per_client_mean" in out
    assert "client    0    1" in out  # the label-by-client matrix
    for name in ("federation_labels.png", "federation_sizes.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_data_command_bad_input_exits_2(capsys):
    assert main(["data", f"--config={QUICK}:smoke", "--config.alpha=0"]) == 2
    assert capsys.readouterr().err.strip() == "fedsim: error: alpha=0.0 must be > 0"
