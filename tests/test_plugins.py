"""A model, an algorithm and a dataset defined outside fedsim, named by import path, run through the
CLI like built-ins: the README's "Extending fedsim" files, written out as they are and run with its
commands (``fedsim run``, a 2-cell ``fedsim sweep`` as one vmapped grid, DP, resume, plots)."""

import json
import re
from pathlib import Path

import pytest

from fedsim.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_files() -> dict[str, str]:
    """The README's Python blocks that open with ``# NAME.py``, by file name."""
    blocks = re.findall(r"```python\n# (\S+\.py)\n(.*?)```", README.read_text(), flags=re.S)
    return {name: body for name, body in blocks}


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    files = readme_files()
    assert set(files) == {"my_fl.py", "my_config.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_json(path: Path):
    return json.loads(path.read_text())


def test_plugins_run_resume_and_plot_like_built_ins(plugin_dir, capsys):
    assert main(["run", "--config=my_config.py", "--workdir=runs/mine"]) == 0
    run = plugin_dir / "runs/mine"
    config, summary = read_json(run / "config.json"), read_json(run / "summary.json")
    assert config["algorithm"] == "my_fl.py:DAMPED"
    assert config["damped_fedavg"] == {"server_lr": 0.5}
    assert summary["params"] == 8 * 32 + 32 + 32 * 3 + 3  # TinyNet(width=32) on 8 features
    assert summary["global_acc"] > 0.5  # three separable blobs: far above chance
    assert (run / "checkpoints").is_dir() and (run / "model.msgpack").stat().st_size > 0
    assert main(["plot", "--workdir", str(run)]) == 0
    assert list(run.glob("*.png"))


def test_plugin_section_overrides_on_the_command_line(plugin_dir):
    flags = ["--config=my_config.py", "--config.damped_fedavg.server_lr=0.8", "--config.rounds=2"]
    assert main(["run", *flags, "--workdir=runs/lr"]) == 0
    assert read_json(plugin_dir / "runs/lr/config.json")["damped_fedavg"]["server_lr"] == 0.8
    assert main(["run", "--config=my_config.py", "--config.model=my_fl.py:Nope",
                 "--workdir=runs/nope"]) == 2  # fmt: skip
    assert not (plugin_dir / "runs/nope").exists()


def test_plugin_sweep_is_one_vmapped_grid(plugin_dir, capsys):
    assert main(["sweep", "--config=my_config.py", "--workdir=runs/mine-sweep"]) == 0
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    cells = read_json(plugin_dir / "runs/mine-sweep/sweep.json")
    assert [c["cell"] for c in cells] == [
        "damped_fedavg.server_lr=0.5",
        "damped_fedavg.server_lr=1.0",
    ]
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]


def test_plugin_algorithm_under_dp(plugin_dir):
    flags = ["--config=my_config.py", "--config.dp_clip=1.0", "--config.dp_noise=0.5"]
    assert main(["run", *flags, "--workdir=runs/mine-dp"]) == 0
    summary = read_json(plugin_dir / "runs/mine-dp/summary.json")
    assert summary["epsilon"] > 0 and summary["clip_norm"] == 1.0
