"""FedLTN's round cost against a FedAvg round of the same model (issue: <= 1.3x), measured in one run.

    python benchmarks/fedltn_round.py --out benchmarks/results/fedltn_round_cpu.json

Both rounds are compiled first, then timed interleaved (FedAvg, FedLTN, FedAvg, ...), so load on the
machine affects both alike. Settings: the comparison's (configs/fedltn.py: 54 examples per client,
E=2) and the spec's heavier local work (all 540 training examples per client, E=5).
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from fedsim.config import load_config
from fedsim.engine.loop import Experiment

SETTINGS = {
    "comparison (54 examples/client, E=2, B=16)": "",
    "spec local work (540 examples/client, E=5, B=32)": "train_examples=0,local_epochs=5,batch_size=32",
}


def compiled_round(arg: str):
    """A no-argument function running the next round of ``configs/fedltn.py:arg``; returns seconds."""
    experiment = Experiment(load_config(f"configs/fedltn.py:{arg}"))
    server, clients = experiment.init()
    federation, key = experiment.federation(), jax.random.PRNGKey(0)
    fn = (
        jax.jit(experiment.round_fn).lower(server, clients, federation, jnp.int32(0), key).compile()
    )
    state = {"server": server, "clients": clients, "round": 0}

    def one_round():
        t = time.perf_counter()
        out = fn(state["server"], state["clients"], federation, jnp.int32(state["round"]), key)
        jax.block_until_ready(out)
        state.update(server=out[0], clients=out[1], round=state["round"] + 1)
        return time.perf_counter() - t

    one_round()  # warm-up
    return one_round


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name, extra in SETTINGS.items():
        rounds = {a: compiled_round(",".join(filter(None, [f"algorithm={a}", extra])))
                  for a in ("fedavg", "fedltn")}  # fmt: skip
        times = {a: [] for a in rounds}
        for _ in range(args.rounds):
            for a, fn in rounds.items():
                times[a].append(fn())
        med = {a: statistics.median(t) for a, t in times.items()}
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
