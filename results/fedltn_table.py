"""Tables of results/fedltn.md from ``fedsim sweep`` workdirs (cells read from each run's
config.json and summary.json, so a grid still running can be tabulated).

    python results/fedltn_table.py calibration runs/fedltn-calibration

``calibration``: per candidate regime of configs/fedltn_calibration.py, the floors' final
``personal_acc_mean`` (mean ± standard error over seeds, n), the majority-class rate of the clients' own
test splits (the best constant predictor per client, from the partition) and whether the candidate
passes (local-only <= 0.80 and FedAvg+FT >= local-only + 0.05). Writes
results/fedltn_calibration.json and prints the markdown table.
"""

import json
import statistics
import sys
from pathlib import Path

import numpy as np

from fedsim import config as config_lib
from fedsim.data.assemble import federation_from_config

ROOT = Path(__file__).resolve().parents[1]
calibration = config_lib.config_module(str(ROOT / "configs/fedltn_calibration.py"))
LOCAL_CEILING, GAIN = 0.80, 0.05
DATA_KEYS = ("partition", "train_examples", "num_clients")


def candidate_configs() -> dict:
    """Each candidate's (and dropped candidate's) full config."""
    out = {}
    for name, keys in {**calibration.CANDIDATES, **calibration.DROPPED}.items():
        config = calibration.get_config()
        config.unlock()
        config.update(keys)
        out[name] = config
    return out


def cells(grid: Path):
    """``(config, summary)`` of every finished cell under ``grid``."""
    for run in sorted(grid.iterdir()):
        if (run / "summary.json").exists():
            config = json.loads((run / "config.json").read_text())
            yield config, json.loads((run / "summary.json").read_text())


def same_data(config: dict, candidate) -> bool:
    """Whether a run's ``config`` drew ``candidate``'s federation (the keys its partition reads)."""
    skew = "alpha" if candidate.partition == "dirichlet" else "labels_per_client"
    return all(config[k] == candidate[k] for k in (*DATA_KEYS, skew))


def mean_se(values: list[float]) -> dict:
    n = len(values)
    se = statistics.stdev(values) / n**0.5 if n > 1 else None
    return {"mean": statistics.fmean(values), "se": se, "n": n, "values": values}


def majority_rate(candidate, seed: int) -> float:
    """Mean over clients of the majority-class share of their own test split (data seed ``seed``)."""
    data = federation_from_config(candidate, seed)
    rates = [
        np.bincount(data.y_test[data.client_test_indices[c, : data.num_test[c]]]).max()
        / data.num_test[c]
        for c in range(data.num_clients)
    ]
    return float(np.mean(rates))


def verdict(local: dict | None, tuned: dict | None) -> bool | None:
    """Whether a candidate passes; None while a deciding floor is missing (local-only above the
    ceiling fails at once)."""
    if local is None:
        return None
    if local["mean"] > LOCAL_CEILING:
        return False
    if tuned is None:
        return None
    return tuned["mean"] >= local["mean"] + GAIN


def calibration_table(grid: Path) -> dict:
    candidates = candidate_configs()
    table = {name: {"floors": {}, "seeds": set()} for name in candidates}
    for config, summary in cells(grid):
        name = next((n for n, c in candidates.items() if same_data(config, c)), None)
        if name is None:
            continue
        floors = table[name]["floors"].setdefault(config["algorithm"], [])
        floors.append(summary["personal_acc_mean"])
        table[name]["seeds"].add(config["seed"])
    out = {}
    for name, row in table.items():
        if not row["floors"]:
            continue
        seeds = sorted(row["seeds"])
        floors = {method: mean_se(v) for method, v in row["floors"].items()}
        majority = mean_se([majority_rate(candidates[name], s) for s in seeds])
        local, tuned = floors.get("local_only"), floors.get("fedavg_ft")
        keys = {**calibration.CANDIDATES, **calibration.DROPPED}[name]
        out[name] = {
            "keys": keys,
            "seeds": seeds,
            "majority": majority,
            **floors,
            "passes": verdict(local, tuned),
        }
    return out


def fmt(stat) -> str:
    if stat is None:
        return "—"
    se = "" if stat["se"] is None else f" ± {stat['se']:.3f}"
    return f"{stat['mean']:.3f}{se} (n={stat['n']})"


def calibration_markdown(table: dict) -> str:
    lines = [
        "| candidate | keys | majority class | local-only | FedAvg | FedAvg+FT | FT - local | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        local, tuned = row.get("local_only"), row.get("fedavg_ft")
        gap = f"{tuned['mean'] - local['mean']:+.3f}" if local and tuned else "—"
        keys = ", ".join(f"{k}={v}" for k, v in row["keys"].items())
        verdict = {True: "yes", False: "no", None: "pending"}[row["passes"]]
        lines.append(
            f"| {name} | {keys} | {fmt(row['majority'])} | {fmt(local)} | "
            f"{fmt(row.get('fedavg'))} | {fmt(tuned)} | {gap} | {verdict} |"
        )
    return "\n".join(lines)


def main(kind: str, grid: str) -> None:
    if kind != "calibration":
        raise SystemExit(f"table {kind!r}; choose: calibration")
    table = calibration_table(Path(grid))
    (ROOT / "results/fedltn_calibration.json").write_text(json.dumps(table, indent=2) + "\n")
    print(calibration_markdown(table))


if __name__ == "__main__":
    main(*sys.argv[1:])
