"""The host side of a run: workdir files, checkpoints, TensorBoard and the progress bar.

A workdir holds one run. ``run`` on a workdir made by the same config resumes from its newest
checkpoint (metrics after that round are recomputed, identically); a finished run is not rerun; a
config that differs only in a larger ``rounds`` extends the run from its newest checkpoint; any other
config is refused.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from fedsim import config as config_lib
from fedsim.checkpoint import Checkpoints
from fedsim.config import with_algorithm_section
from fedsim.engine import loop
from fedsim.engine.grid import check_batchable
from fedsim.engine.setup import build_experiment
from fedsim.errors import ConfigError
from fedsim.metrics import report
from fedsim.model_file import model_files


def _config_json(config) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``args[0]`` is the newest checkpoint's round (0: none)."""


def _existing_run(workdir: Path, config_json: str) -> str:
    """What ``workdir`` holds for this config: ``'new'`` (nothing), ``'resume'`` (the same config),
    ``'finished'`` (the same config, done) or ``'extend'`` (the same config but fewer ``rounds``);
    raises on anything else. A key the saved config lacks (added to fedsim since) counts as the same
    when the new value is its default."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir={str(workdir)!r} exists and is not a directory")
    saved = workdir / "config.json"
    if not saved.exists():
        if (workdir / "metrics.jsonl").exists():
            raise ConfigError(
                f"workdir={str(workdir)!r} holds metrics but no config.json; use a new workdir"
            )
        return "new"
    old, new = json.loads(saved.read_text()), json.loads(config_json)
    defaults = json.loads(_config_json(config_lib.base_config()))
    added = lambda k: k not in old and new[k] == defaults.get(k)  # a key fedsim gained since
    differing = [
        k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and not added(k)
    ]
    if differing == ["rounds"] and new["rounds"] > old["rounds"] and not new["dp_target_epsilon"]:
        return "extend"
    if differing:
        key = differing[0]
        raise ConfigError(
            f"workdir={str(workdir)!r} was made by a different config ({key}: {old.get(key)!r} -> "
            f"{new.get(key)!r}); resume with the same config (or a larger rounds, to extend it) "
            "or use a new workdir"
        )
    return "finished" if (workdir / "summary.json").exists() else "resume"


def _write_atomically(path: Path, content: str | bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.replace(tmp, path)


def _log_row(metrics_file, board, row: dict) -> None:
    """One evaluation's metrics: a line of ``metrics.jsonl`` and the numbers to TensorBoard."""
    metrics_file.write(json.dumps(row) + "\n")
    metrics_file.flush()
    for name, value in row.items():
        if isinstance(value, int | float) and name != "round":
            board.add_scalar(name, value, row["round"])
    board.flush()


def _metrics_up_to(path: Path, last_round: int) -> list[str]:
    """Complete metrics lines of rounds <= last_round (a killed run may leave a torn last line)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["round"] > last_round:
            break
        kept.append(line + "\n")
    return kept


def run(config, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Runs (or resumes) one experiment in ``workdir``; returns the summary dict.

    Writes ``config.json``, ``metrics.jsonl``, ``summary.json``, ``personal_acc.json`` (the last
    evaluation's per-client accuracies), TensorBoard event files and ``checkpoints/``. Every check
    (config, data, workdir) happens before the workdir is touched, so bad input leaves nothing.
    """
    workdir = Path(workdir)
    config = with_algorithm_section(config)
    config_json = _config_json(config)
    status = _existing_run(workdir, config_json)
    if status == "finished":
        _say(progress, f"{workdir} holds this run, finished after {config.rounds} rounds")
        return json.loads((workdir / "summary.json").read_text())
    experiment = build_experiment(config)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "summary.json").unlink(missing_ok=True)  # an extended run is not finished
    checkpoints = Checkpoints(workdir / "checkpoints", max(config.keep_checkpoints, 1))
    start = None
    if status != "new":
        start = checkpoints.restore_latest(loop.abstract_state(experiment))
    first_round = start.round if start else 0
    if first_round:
        _say(progress, f"resuming from round {first_round}")
    _write_atomically(workdir / "config.json", config_json)
    _write_atomically(
        workdir / "metrics.jsonl", "".join(_metrics_up_to(workdir / "metrics.jsonl", first_round))
    )
    every = config.checkpoint_every or config.eval_every
    on_round = lambda record: _checkpoint(checkpoints, record, every, config.rounds)
    classes = experiment.data.num_classes
    try:
        record = _drive(loop.run([experiment], start), [workdir], first_round, config.rounds,
                        "rounds", progress, classes, on_round)  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(checkpoints.latest_round() or 0) from None
    finally:
        checkpoints.close()
    if config.keep_checkpoints == 0:
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    return _write_results(workdir, record, 0, {"resumed_from_round": first_round}, classes)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"fedsim: {message}", flush=True)


def _checkpoint(checkpoints: Checkpoints, record, every: int, rounds: int) -> None:
    if record.round % every == 0 and record.round < rounds:
        checkpoints.save(record.state(0))


def _drive(records, workdirs: list[Path], first_round: int, rounds: int, label: str, progress,
           classes: int, on_round=None):  # fmt: skip
    """Consumes the loop's records: metrics rows to each workdir's files (with a warning when a run
    diverges), the progress bar, and ``on_round(record)``; returns the last record."""
    from tensorboardX import SummaryWriter

    boards = [SummaryWriter(str(w), purge_step=first_round + 1) for w in workdirs]
    bar = tqdm(total=rounds, initial=first_round, desc=label, unit="round", disable=not progress)
    record, warned = None, set()
    losses = {w: _losses(w) for w in workdirs}  # of the rows kept from before a resume
    with bar:
        for record in records:
            for workdir, board, row in zip(workdirs, boards, record.rows, strict=True):
                if row is not None:
                    with open(workdir / "metrics.jsonl", "a") as metrics_file:
                        _log_row(metrics_file, board, row)
                    losses[workdir].append(row["loss"])
                    why = report.divergence(losses[workdir], classes)
                    if why and workdir not in warned:
                        warned.add(workdir)
                        tqdm.write(f"fedsim: warning: {workdir} is diverging after round "
                                   f"{row['round']}: {why}; lower client_lr or the server's lr",
                                   file=sys.stderr)  # fmt: skip
            for board, loss in zip(boards, record.loss, strict=True):
                if loss is not None:  # every round, not only at evaluations
                    board.add_scalar("train_loss", loss, record.round)
            if on_round is not None:
                on_round(record)
            postfix = {"up+down MB": f"{record.traffic_mb[0]:.1f}"}
            if record.loss[0] is not None:
                postfix["loss"] = f"{record.loss[0]:.3f}"
            if record.global_acc[0] is not None:
                postfix["acc"] = f"{record.global_acc[0]:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    for board in boards:
        board.close()
    return record


def _losses(workdir: Path) -> list:
    """The training loss of every evaluated round in ``workdir/metrics.jsonl``."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def _write_results(workdir: Path, record, g: int, extra: dict, num_classes: int) -> dict:
    """The files of cell ``g``'s finished run: model, ``personal_acc.json`` and, last,
    ``summary.json`` (the loop's summary plus ``extra``)."""
    summary = {**record.summaries[g], **extra}
    summary["diverged"] = report.divergence(_losses(workdir), num_classes)
    for name, content in model_files(record.state(g).server_state.model).items():
        _write_atomically(workdir / name, content)
    personal = {"round": summary["rounds"], "personal_acc": record.personal_acc[g].tolist()}
    _write_atomically(workdir / "personal_acc.json", json.dumps(personal) + "\n")
    _write_atomically(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def run_grid(configs, workdirs: list, progress: bool = True) -> list[dict]:
    """Runs new cells as one vmapped program (``fedsim.engine.grid``); returns their summaries.

    Each workdir gets what ``run`` writes except checkpoints: a grid is not resumed mid-way, and a
    later ``fedsim sweep`` reruns an interrupted grid's cells one by one. Raises ``NotBatchable`` (or
    ``ConfigError``) before any file is written when the cells cannot share a program.
    """
    workdirs = [Path(w) for w in workdirs]
    for workdir in workdirs:
        if workdir.exists():
            raise ConfigError(f"workdir={str(workdir)!r} exists; a grid starts only new cells")
    configs = [with_algorithm_section(c) for c in configs]
    check_batchable(configs)
    experiments = [build_experiment(c) for c in configs]
    for workdir, config in zip(workdirs, configs, strict=True):
        workdir.mkdir(parents=True)
        _write_atomically(workdir / "config.json", _config_json(config))
        (workdir / "metrics.jsonl").write_text("")
    label, classes = f"{len(configs)} cells", experiments[0].data.num_classes
    record = _drive(loop.run(experiments), workdirs, 0, configs[0].rounds, label, progress, classes)
    extra = {"resumed_from_round": 0, "grid_cells": len(configs)}
    return [_write_results(w, record, g, extra, classes) for g, w in enumerate(workdirs)]
