"""FedLTN's round cost against a FedAvg round of the same model (issue: <= 1.3x), measured in one run.

    python benchmarks/fedltn_round.py --out benchmarks/results/fedltn_round_cpu.json

Both rounds are compiled first, then timed interleaved (FedAvg, FedLTN, FedAvg, ...), so load on the
machine affects both alike. Settings: the comparison's (configs/fedltn.py: 54 examples per client,
E=2) and the spec's heavier local work (all 540 training examples per client, E=5).
"""

import argparse
import json

import jax

from fedsim.bench import compiled_round, interleaved_medians
from fedsim.config import load_config
from fedsim.engine.setup import build_experiment

SETTINGS = {
    "comparison (54 examples/client, E=2, B=16)": "",
    "spec local work (540 examples/client, E=5, B=32)": "train_examples=0,local_epochs=5,batch_size=32",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name, extra in SETTINGS.items():
        configs = {a: "configs/fedltn.py:" + ",".join(filter(None, [f"algorithm={a}", extra]))
                   for a in ("fedavg", "fedltn")}  # fmt: skip
        med = interleaved_medians(
            {a: compiled_round(build_experiment(load_config(c))) for a, c in configs.items()},
            args.rounds,
        )
        rows.append({
            "suite": "fedltn_round", "setting": name, "device": str(jax.devices()[0]),
            "model": "bn_cnn", "clients_per_round": 10, "rounds_timed": args.rounds,
            "fedavg_round_s": med["fedavg"], "fedltn_round_s": med["fedltn"],
            "ratio_fedltn_vs_fedavg": med["fedltn"] / med["fedavg"],
        })  # fmt: skip
        print(json.dumps(rows[-1]))
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
