"""Figures from finished or running workdirs (``fedsim plot``): several runs on each figure."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def plot_runs(workdirs: list[Path], out_dir: Path) -> list[Path]:
    """Writes the three figures for ``workdirs`` into ``out_dir``; returns their paths."""
    runs = [(Path(w), _read_metrics(Path(w))) for w in workdirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in FIGURES]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for (workdir, rows), color in zip(runs, plt.cm.tab10.colors, strict=False):
        rounds = [r["round"] for r in rows]
        mb = [r["up_mb"] + r["down_mb"] for r in rows]
        for ax, x in zip(axes, (rounds, mb), strict=True):
            ax.plot(
                x, [r["global_acc"] for r in rows], color=color, label=f"{_label(workdir)} global"
            )
            ax.plot(
                x, [r["personal_acc_mean"] for r in rows], "--", color=color, label="personal mean"
            )
    axes[0].set(xlabel="round", ylabel="accuracy", title="accuracy vs round")
    axes[1].set(xlabel="cumulative up + down (MB)", title="accuracy vs communication")
    axes[0].legend(fontsize=7)
    for ax, path in zip(axes, paths[:2], strict=True):
        extent = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(
            fig.dpi_scale_trans.inverted()
        )
        fig.savefig(path, bbox_inches=extent.expanded(1.02, 1.04), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for workdir, _ in runs:
        per_client = workdir / "personal_acc.json"
        if per_client.exists():
            values = json.loads(per_client.read_text())["personal_acc"]
            ax.hist(values, bins=20, range=(0, 1), alpha=0.5, label=_label(workdir))
    ax.set(
        xlabel="personal accuracy (own test split)", ylabel="clients", title="per-client accuracy"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


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
        rest = {k: v for k, v in r["overrides"].items() if k != "seed"}
        groups.setdefault("-".join(f"{k}={v}" for k, v in rest.items()) or "all", []).append(r)
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
