"""results/compression.md's table and figure from a ``fedsim sweep`` workdir of
configs/compression.py: per method (seeds pooled, mean ± SE) final personal and global accuracy,
deployed model MB, uplink and up+down MB per user, and the round and up+down MB per user at which
``personal_acc_mean`` first reaches each of fedltn_table's ``LEVELS``; the figure plots personal
accuracy against cumulative uplink MB per user (the bytes each encoding actually sends).

    python results/compression_table.py runs/compression  # results/compression.json, .png; markdown
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from fedsim import config as config_lib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
compression = config_lib.config_module(str(ROOT / "configs/compression.py"))
tables = config_lib.config_module(str(ROOT / "results/fedltn_table.py"))


def method_name(name: str, config: dict) -> str:
    """The ``METHODS`` entry whose keys ``config`` carries."""
    flat = config_lib.flat_items(ConfigDict(config))
    return next(
        label
        for label, keys in compression.METHODS.items()
        if all(flat[k] == v for k, v in keys.items())
    )


def figure(runs: list, path: Path) -> None:
    curves: dict = {}
    for name, config, _summary, history in runs:
        users = config["num_clients"]
        points = [(row["up_mb"] / users, row["personal_acc_mean"]) for row in history]
        curves.setdefault(method_name(name, config), []).append(points)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, runs in curves.items():
        steps = min(len(r) for r in runs)
        mb = np.mean([[p[0] for p in r[:steps]] for r in runs], axis=0)
        acc = np.mean([[p[1] for p in r[:steps]] for r in runs], axis=0)
        ax.plot(mb, acc, "o-", markersize=3, label=f"{label} ({len(runs)} seeds)")
    ax.set(xscale="log", xlabel="cumulative uplink MB per user", ylabel="personal accuracy (mean)")
    ax.set_title("R1 (Fashion-MNIST #C=8): accuracy vs bytes sent")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def uplink_per_user(runs: list) -> dict:
    per_method: dict = {}
    for name, config, summary, _ in runs:
        per_method.setdefault(method_name(name, config), []).append(
            summary["up_mb"] / config["num_clients"]
        )
    return {label: tables.mean_se(values) for label, values in per_method.items()}


def main(grid: str) -> None:
    table = tables.grouped(Path(grid), method_name)
    runs = list(tables.runs(Path(grid)))
    for label, up in uplink_per_user(runs).items():
        table[label]["up_mb_per_user"] = up
    (ROOT / "results/compression.json").write_text(json.dumps(table, indent=2) + "\n")
    figure(runs, ROOT / "results/compression.png")
    print(tables.comparison_markdown(table, compression.METHODS))
    print("\n| method | uplink MB/user |\n|---|---|")
    for label in compression.METHODS:
        if label in table:
            print(f"| {label} | {tables.short(table[label]['up_mb_per_user'], 2)} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
