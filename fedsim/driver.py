"""The host side of a run: files in the workdir and the progress bar (no jitted math here)."""

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from fedsim.engine.loop import Experiment
from fedsim.errors import ConfigError

OUTPUTS = ("config.json", "metrics.jsonl", "summary.json")


def _check_workdir(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir={str(workdir)!r} exists and is not a directory")
    if any((workdir / name).exists() for name in OUTPUTS):
        raise ConfigError(
            f"workdir={str(workdir)!r} already holds a run (metrics.jsonl/summary.json); "
            "choose a new or empty workdir"
        )


def run(config, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Runs one experiment and writes ``config.json``, ``metrics.jsonl`` and ``summary.json``.

    Every check (config, data, workdir) happens before the workdir is touched, so bad input leaves
    nothing behind. Returns the summary dict.

    >>> from configs import quickstart  # doctest: +SKIP
    >>> summary = run(quickstart.get_config("smoke"), "/tmp/fedsim-smoke")  # doctest: +SKIP
    """
    workdir = Path(workdir)
    _check_workdir(workdir)
    experiment = Experiment(config)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    )
    bar = tqdm(total=config.rounds, desc="rounds", unit="round", disable=not progress)
    with open(workdir / "metrics.jsonl", "w") as metrics_file, bar:
        for record in experiment.records():
            if record.metrics is not None:
                metrics_file.write(json.dumps(record.metrics) + "\n")
                metrics_file.flush()
            postfix = {"MB": f"{record.traffic_mb:.1f}"}
            if record.global_acc is not None:
                postfix["acc"] = f"{record.global_acc:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    (workdir / "summary.json").write_text(json.dumps(experiment.summary, indent=2) + "\n")
    return experiment.summary
