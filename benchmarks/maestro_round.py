"""Maestro's round cost against a FedAvg round of the dense twin (target: <= 1.3x), measured
interleaved in one run.

    python benchmarks/maestro_round.py --out benchmarks/results/maestro_round_cpu.json

Setting: configs/maestro.py's federated mode (100 clients, 10 per round, 1 local epoch, capacity tiers
0.25/0.5/1.0). Each Maestro step samples a truncation and adds the group lasso; a factorised layer at
rank R costs ``R (n + m)`` against the dense ``n m`` (rank masks keep shapes, so tiers cost alike).
"""

import argparse
import json

import jax

from fedsim.bench import compiled_round, interleaved_medians
from fedsim.config import load_config
from fedsim.engine.setup import build_experiment

CONFIGS = {
    "fedavg": "configs/maestro.py:mode=federated,method=dense",
    "maestro": "configs/maestro.py:mode=federated",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    med = interleaved_medians(
        {a: compiled_round(build_experiment(load_config(c))) for a, c in CONFIGS.items()},
        args.rounds,
    )
    row = {
        "suite": "maestro_round", "setting": "configs/maestro.py mode=federated",
        "device": str(jax.devices()[0]), "model": "cnn 8/16/128", "clients_per_round": 10,
        "rounds_timed": args.rounds, "fedavg_round_s": med["fedavg"],
        "maestro_round_s": med["maestro"], "ratio_maestro_vs_fedavg": med["maestro"] / med["fedavg"],
    }  # fmt: skip
    print(json.dumps(row))
    with open(args.out, "w") as f:
        json.dump([row], f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
