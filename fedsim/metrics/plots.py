"""Figures from finished or running workdirs (``fedsim plot``): several runs on each figure."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedsim.errors import ConfigError  # noqa: E402

FIGURES = ("accuracy_vs_round.png", "accuracy_vs_mb.png", "personal_acc_hist.png")


def _read_metrics(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        raise ConfigError(f"workdir={str(workdir)!r} has no metrics.jsonl (not a fedsim run)")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a run in progress may have a torn last line
    if not rows:
        raise ConfigError(f"workdir={str(workdir)!r} has no evaluations yet")
    return rows


def _label(workdir: Path) -> str:
    config = workdir / "config.json"
    if config.exists():
        c = json.loads(config.read_text())
        return f"{workdir.name} ({c.get('algorithm')}, {c.get('partition')})"
    return workdir.name


def pooled_name(overrides: dict) -> str:
    """A sweep cell's name with its seed left out: cells that share it are pooled over seeds."""
    rest = {k: v for k, v in overrides.items() if k != "seed"}
    return "-".join(f"{k}={v}".replace(" ", "") for k, v in rest.items()) or "all"


def expand_sweeps(workdirs: list[Path]) -> list[tuple[str, list[Path]]]:
    """``(label, runs)`` groups to draw: a sweep directory (with ``sweep.json``) gives one group per
    cell with its seeds pooled; any other workdir is a group of one."""
    groups: list[tuple[str, list[Path]]] = []
    for workdir in map(Path, workdirs):
        sweep = workdir / "sweep.json"
        if not sweep.exists():
            groups.append((_label(workdir), [workdir]))
            continue
        cells = json.loads(sweep.read_text())
        varying = {k for c in cells for k, v in c["overrides"].items() if k != "seed"
                   and any(d["overrides"].get(k) != v for d in cells)}  # fmt: skip
        pooled: dict[str, list[Path]] = {}
        for cell in cells:
            shown = {k: v for k, v in cell["overrides"].items() if k in varying}
            name = pooled_name(shown) if shown else workdir.name
            pooled.setdefault(name, []).append(workdir / cell["cell"])
        groups += [(f"{name} ({len(runs)} seeds)" if len(runs) > 1 else name, runs)
                   for name, runs in pooled.items()]  # fmt: skip
    return groups


def _band(runs: list[Path], x_field, y_field: str):
    """``(x, mean, sd)`` of ``y_field`` over the runs at each evaluated round they share."""
    tables = [_read_metrics(r) for r in runs]
    rounds = sorted(set.intersection(*({row["round"] for row in t} for t in tables)))
    at = [{row["round"]: row for row in t} for t in tables]
    ys = np.array([[t[r][y_field] for r in rounds] for t in at], dtype=float)
    xs = np.array([[x_field(t[r]) for r in rounds] for t in at], dtype=float).mean(axis=0)
    return xs, ys.mean(axis=0), ys.std(axis=0)


def _draw(ax, groups, x_field, styles) -> None:
    for (label, runs), color in zip(groups, plt.cm.tab10.colors, strict=False):
        for field, style in styles:
            x, mean, sd = _band(runs, x_field, field)
            ax.plot(x, mean, style, color=color, label=label if style == "-" else None)
            if len(runs) > 1:
                ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)


def plot_runs(workdirs: list[Path], out_dir: Path) -> list[Path]:
    """Writes the three figures for ``workdirs`` (runs, or sweep directories whose seeds are pooled
    as mean ± sd bands) into ``out_dir``; returns their paths."""
    groups = expand_sweeps(workdirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in FIGURES]
    styles = (("global_acc", "-"), ("personal_acc_mean", "--"))
    x_fields = (lambda r: r["round"], lambda r: r["up_mb"] + r["down_mb"])
    titles = (("round", "accuracy vs round"), ("cumulative up + down (MB)", "accuracy vs MB"))
    for path, x_field, (xlabel, title) in zip(paths[:2], x_fields, titles, strict=True):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        _draw(ax, groups, x_field, styles)
        ax.set(xlabel=xlabel, ylabel="accuracy (solid: global, dashed: personal mean)", title=title)
        if xlabel == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="lower right", ncol=1 + len(groups) // 8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    _histogram([r for _, runs in groups for r in runs[:1]], paths[2])
    return paths


def _histogram(runs: list[Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for workdir in runs:
        per_client = workdir / "personal_acc.json"
        if per_client.exists():
            values = json.loads(per_client.read_text())["personal_acc"]
            ax.hist(values, bins=20, range=(0, 1), alpha=0.5, label=_label(workdir))
    ax.set(
        xlabel="personal accuracy (own test split)", ylabel="clients", title="per-client accuracy"
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_federation(data, out_dir: Path, title: str) -> list[Path]:
    """``federation_labels.png`` (label-by-client counts) and ``federation_sizes.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_png, sizes_png = out_dir / "federation_labels.png", out_dir / "federation_sizes.png"
    fig, ax = plt.subplots(figsize=(7, 4))
    image = ax.imshow(
        data.label_histogram.T, aspect="auto", interpolation="nearest", cmap="viridis"
    )
    ax.set(xlabel="client", ylabel="label", title=f"label counts per client: {title}")
    fig.colorbar(image, ax=ax, label="examples")
    fig.tight_layout()
    fig.savefig(labels_png, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.hist(data.num_examples, bins=min(50, max(5, data.num_clients // 2)))
    ax.set(xlabel="training examples per client", ylabel="clients", title=f"client sizes: {title}")
    fig.tight_layout()
    fig.savefig(sizes_png, dpi=120)
    plt.close(fig)
    return [labels_png, sizes_png]


def plot_sweep(results: list[dict], path: Path) -> Path:
    """``fedsim sweep``'s summary figure: final global and personal accuracy per cell, cells that
    differ only in ``seed`` pooled into one bar (mean, with the seeds' standard deviation)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(pooled_name(r["overrides"]), []).append(r)
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) + 2), 4))
    width = 0.4
    for offset, field in ((-width / 2, "global_acc"), (width / 2, "personal_acc_mean")):
        values = [[r["summary"].get(field) or 0.0 for r in groups[n]] for n in names]
        ax.bar(
            [i + offset for i in range(len(names))],
            [np.mean(v) for v in values],
            width,
            yerr=[np.std(v) for v in values],
            capsize=3,
            label=field,
        )
    seeds = max(len(g) for g in groups.values())
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(
        "final accuracy" + (f" (mean ± sd over up to {seeds} seeds)" if seeds > 1 else "")
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
