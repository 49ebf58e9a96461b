"""``fedsim sweep``: every cell of a config's ``get_sweep()``, as few compiled programs as possible.

New cells that differ only in seeds or traceable hyper-parameters (``client_lr`` and the keys each
algorithm's ``AlgorithmSpec.traceable`` names, ``fedsim.engine.grid``; seeds need a fixed ``data_seed``
so that every cell has the same data shapes) train as one vmapped program. The others run one after
another (finished cells skipped, interrupted ones resumed) with JAX's persistent compilation cache in ``DIR/.jax_cache``, so identical programs compile once. Writes
``DIR/sweep.json`` (every cell's overrides and summary), ``DIR/results.csv``, ``DIR/results.md`` (seeds
pooled, mean ± sd) and ``DIR/sweep.png``.
"""

import csv
import json
from pathlib import Path

import jax

from fedsim import driver
from fedsim.engine.grid import NotBatchable
from fedsim.metrics.plots import plot_sweep, pooled_name

CSV_FIELDS = (
    "global_acc",
    "personal_acc_mean",
    "personal_acc_worst10",
    "personal_acc_var",
    "loss",
    "up_mb",
    "down_mb",
    "model_mb",
    "density",
    "params",
    "epsilon",
    "compile_s",
    "wall_s",
    "sim_time",
    "samples_per_s",
    "grid_cells",
)


def cell_name(overrides: dict) -> str:
    """The cell's directory name: ``key=value`` pairs joined by ``-`` (spaces dropped)."""
    return "-".join(f"{k}={v}".replace(" ", "") for k, v in overrides.items()) or "default"


def use_compile_cache(workdir: Path) -> None:
    """JAX's persistent compilation cache in ``workdir/.jax_cache``, every program cached."""
    jax.config.update("jax_compilation_cache_dir", str((workdir / ".jax_cache").resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_sweep(cells: list[tuple[dict, object]], workdir, progress: bool = True) -> list[dict]:
    """Runs ``cells`` (``(overrides, config)`` pairs, every config already validated) into
    ``workdir/<cell name>``; returns one ``{'cell', 'overrides', 'summary'}`` per cell."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    use_compile_cache(workdir)
    dirs = [workdir / cell_name(overrides) for overrides, _ in cells]
    summaries = {}
    new = [i for i, d in enumerate(dirs) if not d.exists()]
    if len(new) >= 2:
        try:
            done = driver.run_grid([cells[i][1] for i in new], [dirs[i] for i in new], progress)
            summaries.update(zip(new, done, strict=True))
            print(f"sweep: {len(new)} cells trained as one vmapped grid", flush=True)
        except NotBatchable as why:
            print(f"sweep: cells run one after another ({why})", flush=True)
    for i, ((_, config), cell_dir) in enumerate(zip(cells, dirs, strict=True)):
        if i not in summaries:
            print(f"sweep cell {cell_dir.name}", flush=True)
            summaries[i] = driver.run(config, cell_dir, progress)
    results = [
        {"cell": d.name, "overrides": overrides, "summary": summaries[i]}
        for i, ((overrides, _), d) in enumerate(zip(cells, dirs, strict=True))
    ]
    (workdir / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    write_csv(results, workdir / "results.csv")
    write_markdown(results, workdir / "results.md")
    plot_sweep(results, workdir / "sweep.png")
    return results


TABLE_FIELDS = ("global_acc", "personal_acc_mean", "personal_acc_worst10", "up_mb", "model_mb")


def write_markdown(results: list[dict], path: Path) -> None:
    """A comparison table: one row per cell with its seeds pooled (mean ± sd over seeds)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(pooled_name(r["overrides"]), []).append(r["summary"])
    lines = [
        "| cell | seeds | " + " | ".join(TABLE_FIELDS) + " |",
        "|---|---|" + "---|" * len(TABLE_FIELDS),
    ]
    for name, summaries in groups.items():
        cells = [_mean_sd([s.get(f) for s in summaries]) for f in TABLE_FIELDS]
        lines.append(f"| {name} | {len(summaries)} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _mean_sd(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4g}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.4g} ± {sd:.2g}"


def write_csv(results: list[dict], path: Path) -> None:
    """One row per cell: its name, its overrides, then the summary's ``CSV_FIELDS``."""
    keys = list(dict.fromkeys(k for r in results for k in r["overrides"]))
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cell", *keys, *CSV_FIELDS])
        for r in results:
            writer.writerow(
                [r["cell"]]
                + [r["overrides"].get(k, "") for k in keys]
                + [r["summary"].get(f, "") for f in CSV_FIELDS]
            )
