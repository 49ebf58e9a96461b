"""The attack x defence table of results/robust.md from a ``fedsim sweep`` workdir of
configs/robust.py: final ``global_acc`` (mean ± standard error over seeds, n) per defence and attack.

    python results/robust_table.py runs/robust      # writes results/robust.json, prints markdown
"""

import json
import statistics
import sys
from pathlib import Path

from ml_collections import ConfigDict

from fedsim import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
robust = config_lib.config_module(str(ROOT / "configs/robust.py"))


def defence_name(config: dict) -> str:
    """The ``DEFENCES`` entry whose keys ``config`` carries."""
    flat = config_lib.flat_items(ConfigDict(config))
    return next(
        name for name, keys in robust.DEFENCES.items() if all(flat[k] == v for k, v in keys.items())
    )


def table(grid: Path) -> dict:
    accuracies: dict = {}
    for summary in sorted(grid.glob("*/summary.json")):
        config = json.loads((summary.parent / "config.json").read_text())
        cell = accuracies.setdefault(defence_name(config), {}).setdefault(config["attack"], [])
        cell.append(json.loads(summary.read_text())["global_acc"])
    return {
        defence: {attack: stats(values) for attack, values in row.items()}
        for defence, row in accuracies.items()
    }


def stats(values: list[float]) -> dict:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "se": se, "n": len(values), "values": values}


def cell_text(stat: dict | None) -> str:
    if stat is None:
        return "—"
    se = "" if stat["se"] is None else f" ± {stat['se']:.3f}"
    return f"{stat['mean']:.3f}{se} (n={stat['n']})"


def markdown(rows: dict) -> str:
    attacks = list(robust.ATTACKS)
    lines = ["| defence | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
    for defence in robust.DEFENCES:
        if defence in rows:
            cells = " | ".join(cell_text(rows[defence].get(a)) for a in attacks)
            lines.append(f"| {defence} | {cells} |")
    return "\n".join(lines)


def main(grid: str) -> None:
    rows = table(Path(grid))
    (ROOT / "results/robust.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
