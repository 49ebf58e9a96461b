"""One experiment over two real local processes (``jax.distributed``, one CPU device each) equals
the same experiment in one process over two fake CPU devices, round by round; each process writes
its own workdir. Bad process flags exit 2 with one line."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fedsim.cli import main

RUN = ["run", "--config", "configs/quickstart.py:smoke", "--config.devices=0"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def fedsim(args: list[str], fake_devices: int = 1) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={fake_devices}"}
    return subprocess.Popen([sys.executable, "-m", "fedsim", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_process_on_two_devices(tmp_path):
    address = f"localhost:{free_port()}"
    processes = [
        fedsim(["--coordinator", address, "--num-processes", "2", "--process-id", str(i), *RUN,
                "--workdir", str(tmp_path / f"process{i}")])
        for i in range(2)
    ]  # fmt: skip
    single = fedsim([*RUN, "--workdir", str(tmp_path / "single")], fake_devices=2)
    for process in [*processes, single]:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output
    reference = metrics(tmp_path / "single")
    for i in range(2):
        rows = metrics(tmp_path / f"process{i}")
        assert len(rows) == len(reference) == 2
        for row, expected in zip(rows, reference, strict=True):
            for key in ("loss", "global_acc", "personal_acc_mean", "up_mb", "down_mb"):
                assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--num-processes", "2", "--process-id", "2"], "--process-id 2"),
        (["--num-processes", "0", "--process-id", "0"], "--num-processes 0"),
        (["--process-id", "0"], "--num-processes"),
    ],
)
def test_bad_process_flags_exit_2_with_one_line(flags, named, capsys):
    assert main(["--coordinator", "localhost:1", *flags, *RUN, "--workdir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
