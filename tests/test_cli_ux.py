"""What a new user hits in their first hour, command by command: each case is a command line, the
exit code it must give and the text it must print (or the file it must write)."""

import json
import tomllib
from pathlib import Path

import pytest

from fedsim import bench, driver
from fedsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.py")
FEDAVG = str(ROOT / "configs/fedavg.py")  # its smoke model is the MLP, hidden=(...)

# (flags after 'run', text of the one-line error): every one exits 2 and leaves no workdir
ONE_LINE_ERRORS = [
    ([f"--config={QUICK}:smoke", "--config.algorithm=fedltn"], "val_fraction=0"),  # it prunes
    ([f"--config={QUICK}:smoke,alpha"], "alpha takes a float"),  # a bare ARG key is True
    ([f"--config={QUICK}:smoke", "--config.dataset=mnist-subset"], "dataset='mnist-subset'"),
    ([f"--config={QUICK}:smoke", "--config.num_client=5"], "did you mean num_clients"),
    ([f"--config={QUICK}:smok"], "did you mean smoke"),
    ([f"--config={QUICK}:smoke", "--config.prox_mu=0.1"], "did you mean fedprox.mu"),
    (["--config=configs/no_such.py"], "config file 'configs/no_such.py' does not exist"),
    ([f"--config={QUICK}:smoke", "--config.algorithm=fedbn"], "no normalisation layers"),
    (
        [f"--config={FEDAVG}:smoke", "--config.model_kwargs.hidden=16"],
        "model_kwargs={'hidden': 16}",
    ),
]


@pytest.mark.parametrize(("flags", "text"), ONE_LINE_ERRORS)
def test_mistakes_get_one_clear_line(flags, text, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", *flags, f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err, err
    assert "\\'" not in err and "\\n" not in err
    assert not workdir.exists()


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["run", "--help"], ["sweep", "-h"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "fedsim keys" not in out.splitlines()[0]
    for command in ("run", "sweep", "data", "plot", "bench", "keys"):
        assert f"\n  {command} " in out


def test_key_reference_lists_every_key_with_default_and_meaning(capsys):
    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mu = next(line for line in lines if line.startswith("fedprox.mu "))
    assert "= 0.01" in mu and "proximal" in mu
    assert any(line.startswith("client_lr ") and "learning rate" in line for line in lines)
    assert main(["keys", "--markdown"]) == 0
    assert capsys.readouterr().out == (ROOT / "docs/keys.md").read_text()  # the page is current


def test_a_config_s_own_values_in_the_reference(capsys):
    assert main(["keys", f"--config={QUICK}:smoke", "--config.fedprox.mu=0.5"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("fedprox.mu ") and "= 0.5" in line for line in out.splitlines())


def test_each_algorithm_brings_its_own_defaults(tmp_path):
    workdir = tmp_path / "adam"
    assert main(["run", f"--config={QUICK}:smoke", "--config.algorithm=fedadam",
                 f"--workdir={workdir}"]) == 0  # fmt: skip
    assert json.loads((workdir / "config.json").read_text())["fedadam"]["server_lr"] == 0.01


def test_a_diverging_run_says_so(tmp_path, capsys):
    workdir = tmp_path / "hot"
    argv = ["run", f"--config={QUICK}:smoke", "--config.client_lr=3.0", f"--workdir={workdir}"]
    assert main(argv) == 0
    assert "is diverging after round 1" in capsys.readouterr().err
    assert "chance level" in json.loads((workdir / "summary.json").read_text())["diverged"]


def test_model_kwargs_override_one_key(tmp_path):
    workdir = tmp_path / "maestro"
    argv = ["run", f"--config={QUICK}:smoke", "--config.algorithm=maestro",
            "--config.model_kwargs.factorized=True", f"--workdir={workdir}"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((workdir / "config.json").read_text())["model_kwargs"]
    assert saved == {"width": 4, "hidden": 16, "factorized": True}


def test_run_prints_a_summary_says_finished_and_extends_rounds(tmp_path, capsys):
    workdir = tmp_path / "qs"
    argv = ["run", f"--config={QUICK}:smoke", f"--workdir={workdir}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 rounds in" in out and "global_acc" in out and str(workdir) in out
    assert main(argv) == 0
    assert "finished after 2 rounds" in capsys.readouterr().out
    assert main([*argv, "--config.rounds=3"]) == 0
    out = capsys.readouterr().out
    assert "resuming from round 1" in out and "3 rounds in" in out
    rounds = [json.loads(line)["round"] for line in (workdir / "metrics.jsonl").open()]
    assert rounds == [1, 2, 3]
    assert main([*argv, "--config.rounds=1"]) == 2  # fewer rounds is a different run


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, capsys):
    real_run = driver.loop.run

    def interrupted_after_two_rounds(*args):
        for record in real_run(*args):
            yield record
            if record.round == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(driver.loop, "run", interrupted_after_two_rounds)
    argv = ["run", f"--config={QUICK}:smoke,rounds=4", f"--workdir={tmp_path / 'w'}"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "fedsim: interrupted; rerun the same command to resume from round 2"


def test_bench_writes_to_a_run_directory_by_default():
    assert bench.default_out("round").parts[0] == "runs"


def test_pytest_q_prints_its_summary_line():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-q" not in options.get("addopts", "")


def test_rows_count_the_clients_never_sampled(tmp_path):
    workdir = tmp_path / "qs"
    assert main(["run", f"--config={QUICK}:smoke,rounds=3", f"--workdir={workdir}"]) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    never = [row["clients_never_sampled"] for row in rows]
    assert never[0] == 10 - 3 and never == sorted(never, reverse=True)  # 3 of 10 per round


def test_fedsim_data_writes_figures_only_with_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", f"--config={QUICK}:smoke"]) == 0
    assert "label" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_warnings_are_one_line_without_source(tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.run(  # 8 clients with two labels each leave some label unheld: a warning
        [sys.executable, "-m", "fedsim", "data", f"--config={ROOT / 'configs/fedltn.py'}:smoke,regime=paper"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("fedsim: warning: label_quantity") for line in lines), (
        lines
    )


def test_a_key_added_since_a_run_keeps_its_workdir_resumable(tmp_path):
    from fedsim import driver
    from fedsim.config import base_config
    from fedsim.errors import ConfigError

    current = driver._config_json(base_config())
    saved = json.loads(current)
    del saved["attack"]  # made before the key existed; its default changes nothing
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "summary.json").write_text("{}")
    assert driver._existing_run(tmp_path, current) == "finished"
    saved["attack"] = "sign_flip"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="attack"):
        driver._existing_run(tmp_path, current)
