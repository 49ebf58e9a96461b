"""FedLTN's Jump-Start and lean start (Mugunthan et al., ECCV 2022) measured in the setting of
``configs/fedltn.py``; writes results/jump_start.{json,md}.

    python results/jump_start.py runs/jump-start      # trains the cells (sweeps), then tabulates
    python results/jump_start.py runs/jump-start --table-only

Cells: FedLTN without and with Jump-Start (``fedltn.jump_start_rounds=3``) and with lean start (budgets
1.0/0.5/0.25), seeds 0-2 on one partition (``data_seed=0``, so each group trains as one vmapped grid),
evaluated every 5 rounds. Rounds-to-target (spec 5.4): per seed, the first evaluated round whose
``personal_acc_mean`` reaches 95 % of that seed's final accuracy without Jump-Start; MB is the
cumulative up + down traffic at that round (Jump-Start's upload included).
"""

import json
import statistics
import sys
from pathlib import Path

from fedsim.config import load_config
from fedsim.sweep import run_sweep

SEEDS = (0, 1, 2)
GROUPS = {"plain": "", "jump_start": "fedltn.jump_start_rounds=3", "lean": "lean=True"}
TIER_FIELDS = ("personal_acc", "model_mb", "density")


def train(workdir: Path) -> None:
    for group, arg in GROUPS.items():
        cells = []
        for seed in SEEDS:
            spec = ",".join(filter(None, [arg, f"seed={seed},data_seed=0,eval_every=5"]))
            cells.append(({"seed": seed}, load_config(f"configs/fedltn.py:{spec}")))
        run_sweep(cells, workdir / group, progress=False)


def rows(workdir: Path, group: str, seed: int) -> list[dict]:
    path = workdir / group / f"seed={seed}" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def to_target(history: list[dict], target: float) -> dict:
    hit = next((r for r in history if r["personal_acc_mean"] >= target), None)
    return {
        "round": None if hit is None else hit["round"],
        "mb": None if hit is None else hit["up_mb"] + hit["down_mb"],
    }


def mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "never"
    mean, sd = statistics.mean(values), statistics.pstdev(values)
    return f"{mean:.3f} ± {sd:.3f}" if max(values) <= 1 else f"{mean:.1f} ± {sd:.1f}"


def tabulate(workdir: Path) -> dict:
    out = {"seeds": list(SEEDS), "per_seed": {}}
    for seed in SEEDS:
        plain = rows(workdir, "plain", seed)
        target = 0.95 * plain[-1]["personal_acc_mean"]
        entry = {"target": target}
        for group in GROUPS:
            history = rows(workdir, group, seed)
            last = history[-1]
            entry[group] = {
                "final": {
                    k: last[k]
                    for k in (
                        "personal_acc_mean",
                        "personal_acc_worst10",
                        "model_mb",
                        "density",
                        "up_mb",
                        "down_mb",
                    )
                },
                "to_target": to_target(history, target),
                "first_eval": {k: history[0][k] for k in ("round", "personal_acc_mean", "density")},
            }
            if group == "lean":
                entry[group]["tiers"] = {
                    k: v for k, v in last.items() if k.rsplit("_", 1)[-1] in ("b100", "b50", "b25")
                }
        out["per_seed"][seed] = entry
    return out


def markdown(result: dict) -> str:
    seeds = result["per_seed"].values()
    lines = [
        "# FedLTN Jump-Start and lean start (Fashion-MNIST #C=2, 100 clients, 10 % per round)",
        "",
        "Setting `configs/fedltn.py` (bn_cnn, 6,000-image subset, 100 rounds, E=2, B=16), partition "
        "seed 0, training seeds 0, 1, 2; mean ± population sd over seeds. Built by "
        "`results/jump_start.py`.",
        "",
        "| run | personal_acc_mean | worst10 | model_mb | density | up+down MB | round to target | MB to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in GROUPS:
        final = [s[group]["final"] for s in seeds]
        hit = [s[group]["to_target"] for s in seeds]
        lines.append(
            f"| {group} | {mean_sd(f['personal_acc_mean'] for f in final)} "
            f"| {mean_sd(f['personal_acc_worst10'] for f in final)} "
            f"| {mean_sd(f['model_mb'] for f in final)} | {mean_sd(f['density'] for f in final)} "
            f"| {mean_sd(f['up_mb'] + f['down_mb'] for f in final)} "
            f"| {mean_sd(h['round'] for h in hit)} ({sum(h['round'] is not None for h in hit)}/3) "
            f"| {mean_sd(h['mb'] for h in hit)} |"
        )
    targets = ", ".join(f"{s['target']:.3f}" for s in seeds)
    lines += [
        "",
        "Target per seed: 95 % of that seed's final `personal_acc_mean` without Jump-Start "
        f"({targets}). Evaluations every 5 rounds.",
        "",
        "Lean start, per density-budget tier (final evaluation, mean over seeds):",
        "",
        "| tier | personal_acc | model_mb | density |",
        "|---|---|---|---|",
    ]
    for tier in ("b100", "b50", "b25"):
        cells = [mean_sd(s["lean"]["tiers"][f"{f}_{tier}"] for s in seeds) for f in TIER_FIELDS]
        lines.append(f"| {tier[1:]} % | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    if "--table-only" not in sys.argv:
        train(workdir)
    result = tabulate(workdir)
    here = Path(__file__).parent
    (here / "jump_start.json").write_text(json.dumps(result, indent=2) + "\n")
    (here / "jump_start.md").write_text(markdown(result))
    print(markdown(result))
