"""Builds results/fedltn_fmnist.{json,md} from a ``fedsim sweep --config configs/fedltn.py`` workdir.

    python results/fedltn_table.py runs/fedltn-grid

Per method (cells ``<method>-s<seed>`` or ``algorithm=<method>-seed=<seed>``): final
``personal_acc_mean``/``worst10``, ``model_mb`` (encoded and values-only), ``density``, cumulative
``up_mb + down_mb``, and the cumulative MB at the first evaluation whose ``personal_acc_mean`` reaches
``TARGET``; mean and std over seeds (population std, ``ddof=0``).
"""

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TARGET = 0.65
FIELDS = ("personal_acc_mean", "personal_acc_worst10", "model_mb", "model_mb_values", "density")


def cell_name(path: Path) -> tuple[str, int] | None:
    match = re.fullmatch(r"(?:algorithm=)?(\w+?)-(?:s|seed=)(\d+)", path.name)
    return (match.group(1), int(match.group(2))) if match else None


def summarise(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    reached = next((r for r in rows if r["personal_acc_mean"] >= TARGET), None)
    out = {k: last[k] for k in FIELDS}
    out.update(
        rounds=last["round"],
        total_mb=last["up_mb"] + last["down_mb"],
        mb_to_target=None if reached is None else reached["up_mb"] + reached["down_mb"],
        round_to_target=None if reached is None else reached["round"],
    )
    return out


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}


def main(grid: Path):
    runs = defaultdict(dict)
    for path in sorted(grid.iterdir()):
        name = cell_name(path)
        if name and (path / "summary.json").exists():
            runs[name[0]][name[1]] = summarise(path)
    table = {
        method: {
            key: mean_std([r[key] for r in seeds.values()]) for key in next(iter(seeds.values()))
        }
        | {"seeds": sorted(seeds), "per_seed": seeds}
        for method, seeds in runs.items()
    }
    Path("results/fedltn_fmnist.json").write_text(json.dumps(table, indent=2) + "\n")

    def fmt(stat, digits=3):
        if stat is None:
            return "never"
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" + (
            "" if stat["n"] == len(seeds) else f" ({stat['n']}/{len(seeds)})"
        )

    lines = [
        f"| method | seeds | personal_acc_mean | personal_acc_worst10 | model_mb | model_mb values-only | density | up+down MB (100 rounds) | MB to personal acc {TARGET} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in sorted(table.items(), key=lambda kv: -kv[1]["personal_acc_mean"]["mean"]):
        seeds = row["seeds"]
        lines.append(
            f"| {method} | {','.join(map(str, seeds))} | {fmt(row['personal_acc_mean'])} | "
            f"{fmt(row['personal_acc_worst10'])} | {fmt(row['model_mb'], 4)} | "
            f"{fmt(row['model_mb_values'], 4)} | {fmt(row['density'])} | {fmt(row['total_mb'], 1)} | "
            f"{fmt(row['mb_to_target'], 1)} |"
        )
    Path("results/fedltn_fmnist_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
