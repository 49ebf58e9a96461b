"""The comparison table of configs/fedbuff.py: per cell (seeds pooled, mean ± sd over the seeds that
reached it), the rounds and the simulated time to the first evaluation with ``global_acc >=
TARGET_ACC``, the final accuracy and the simulated time of the whole run.

    fedsim sweep --config configs/fedbuff.py --workdir runs/fedbuff
    python results/fedbuff_table.py runs/fedbuff [TARGET]

Reads each cell's metrics.jsonl (every evaluation), so a sweep still running can be tabulated.
"""

import json
import statistics
import sys
from pathlib import Path

from fedsim import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
TARGET_ACC = config_lib.config_module(str(ROOT / "configs/fedbuff.py")).TARGET_ACC


def to_target(rows: list[dict], target: float) -> tuple | None:
    """``(round, sim_time)`` of the first evaluation at ``target`` accuracy, or None."""
    return next(((r["round"], r["sim_time"]) for r in rows if r["global_acc"] >= target), None)


def mean_sd(values: list) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(sweep: Path, target: float) -> str:
    """The markdown table of the cells of ``sweep`` that have evaluated (their seeds pooled: a cell
    directory's name without its ``seed=`` item)."""
    groups: dict[str, list[list[dict]]] = {}
    for metrics in sorted(sweep.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        name = "-".join(p for p in metrics.parent.name.split("-") if not p.startswith("seed="))
        groups.setdefault(name, []).append(rows)
    lines = [
        f"| cell | seeds | reached {target} | rounds to it | sim_time to it | final global_acc "
        "| final sim_time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        hits = [hit for hit in (to_target(rows, target) for rows in runs) if hit]
        finals = [rows[-1] for rows in runs]
        lines.append(
            f"| {name} | {len(runs)} | {len(hits)} | {mean_sd([h[0] for h in hits])} "
            f"| {mean_sd([h[1] for h in hits])} | {mean_sd([f['global_acc'] for f in finals])} "
            f"| {mean_sd([f['sim_time'] for f in finals])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = float(sys.argv[2]) if len(sys.argv) > 2 else TARGET_ACC
    print(table(Path(sys.argv[1]), target), end="")
