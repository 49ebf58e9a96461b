"""Builds results/dp.md, results/dp.json and results/dp_accuracy.png from a sweep of configs/dp.py.

    fedsim sweep --config configs/dp.py --workdir runs/dp
    python results/dp_table.py runs/dp

Every cell directory of the sweep holds one run (target epsilon 1, 2, 4, 8, and no DP).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent


def read_run(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "run": run.name,
        "dp": config["dp_clip"] > 0,
        "target_epsilon": config["dp_target_epsilon"] if config["dp_clip"] > 0 else None,
        "epsilon": summary["epsilon"],
        "noise_multiplier": summary["dp_noise_multiplier"],
        "clip": config["dp_clip"] or None,
        "global_acc": summary["global_acc"],
        "personal_acc_mean": summary["personal_acc_mean"],
        "best_global_acc": max(row["global_acc"] for row in rows),
        "curve": [(row["round"], row["global_acc"]) for row in rows],
        "rounds": config["rounds"],
        "wall_s": summary["wall_s"],
        "seed": config["seed"],
    }


def main(sweep_dir: str) -> None:
    runs = [read_run(p) for p in sorted(Path(sweep_dir).iterdir()) if (p / "summary.json").exists()]
    runs.sort(key=lambda r: (not r["dp"], r["epsilon"] or 0))
    (ROOT / "dp.json").write_text(json.dumps(runs, indent=2) + "\n")

    lines = [
        "# DP-FedAvg on Fashion-MNIST: accuracy against epsilon",
        "",
        "`fedsim sweep --config configs/dp.py` (100 clients, Dir(0.5), Poisson sampling q = 0.2, 30 "
        "rounds of 1 local epoch, batch 32, client lr 0.05, CNN conv 4/8 + dense 32 (13,818 "
        "parameters), clip C = 1, delta = 1e-5, RDP accountant; seed 0; the project's 2-core CPU).",
        "",
        "| run | epsilon (delta 1e-5) | noise multiplier z | global_acc (round 30) | best global_acc | personal_acc_mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        eps = f"{r['epsilon']:.2f}" if r["dp"] else "no DP"
        z = f"{r['noise_multiplier']:.3f}" if r["dp"] else "-"
        lines.append(
            f"| {r['run']} | {eps} | {z} | {r['global_acc']:.4f} | {r['best_global_acc']:.4f} | "
            f"{r['personal_acc_mean']:.4f} |"
        )
    (ROOT / "dp.md").write_text("\n".join(lines) + "\n")

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    private = [r for r in runs if r["dp"]]
    left.plot(
        [r["epsilon"] for r in private], [r["global_acc"] for r in private], "o-", label="DP-FedAvg"
    )
    for r in runs:
        if not r["dp"]:
            left.axhline(r["global_acc"], color="gray", ls="--", label="no DP")
    left.set(xscale="log", xlabel="epsilon (delta = 1e-5)", ylabel="global accuracy, round 30")
    left.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
    left.minorticks_off()
    left.legend()
    for r in runs:
        rounds, acc = zip(*r["curve"], strict=True)
        label = f"epsilon {r['epsilon']:.0f}" if r["dp"] else "no DP"
        right.plot(rounds, acc, marker=".", label=label)
    right.set(xlabel="round", ylabel="global accuracy")
    right.legend()
    fig.suptitle("DP-FedAvg, Fashion-MNIST, 100 clients, Dir(0.5), seed 0")
    fig.tight_layout()
    fig.savefig(ROOT / "dp_accuracy.png", dpi=120)


if __name__ == "__main__":
    main(sys.argv[1])
