"""CPU convolutions before and after ``conv_impl='canonical'`` (what ``auto`` picks on CPU now; before
it, ``auto`` picked ``im2col``), measured side by side in one run.

    python benchmarks/conv_before_after.py --out benchmarks/results/conv_before_after_cpu.json

Two settings, each run both ways in turn (before, after, before, after, ...), so load on the
machine affects both alike:

- ``lenet5_round``: the LeNet-5 Fashion-MNIST round of ``configs/fedavg.py`` (the full 60,000
  training images over 10 clients, all sampled, 1 local epoch of batch 64, SGD momentum 0.9): one
  compiled round timed ``--rounds`` times, samples per second from the median.
- ``quickstart``: ``fedsim run --config configs/quickstart.py`` end to end in a fresh workdir
  (setup, compile, 25 rounds, evaluations, files), wall seconds of each of ``--repeats`` runs.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import jax

from fedsim.bench import compiled_round, host_name, interleaved_medians
from fedsim.config import load_config
from fedsim.engine.setup import build_experiment

LENET = (
    "configs/fedavg.py:dataset=fashion_mnist,partition=iid,num_clients=10,clients_per_round=10,"
    "model=lenet5,batch_size=64,client_momentum=0.9,local_epochs=1"
)
WAYS = {"before": "im2col", "after": "canonical"}


def lenet_round(rounds: int) -> dict:
    experiments = {
        way: build_experiment(load_config(f"{LENET},model_kwargs={{'conv_impl':'{impl}'}}"))
        for way, impl in WAYS.items()
    }
    samples = int(experiments["after"].data.num_examples.sum())  # every client, one epoch
    seconds = interleaved_medians({w: compiled_round(e) for w, e in experiments.items()}, rounds)
    return {
        "setting": "lenet5_round", "config": LENET, "rounds_timed": rounds,
        "samples_per_round": samples,
        **{f"{way}_samples_per_s": samples / seconds[way] for way in WAYS},
        "speedup": seconds["before"] / seconds["after"],
    }  # fmt: skip


def quickstart_wall(repeats: int) -> dict:
    walls = {way: [] for way in WAYS}
    for _ in range(repeats):
        for way, impl in WAYS.items():
            with tempfile.TemporaryDirectory() as workdir:
                command = [
                    sys.executable, "-m", "fedsim", "run", "--config", "configs/quickstart.py",
                    f"--config.model_kwargs={{'conv_impl':'{impl}'}}", "--workdir", workdir,
                ]  # fmt: skip
                t = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                walls[way].append(time.perf_counter() - t)
    return {
        "setting": "quickstart", "config": "configs/quickstart.py", "repeats": repeats,
        **{f"{way}_wall_s": walls[way] for way in WAYS},
        "speedup": statistics.median(walls["before"]) / statistics.median(walls["after"]),
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = {"device": jax.devices()[0].device_kind, "host": host_name()}
    rows = [{**device, **lenet_round(args.rounds)}, {**device, **quickstart_wall(args.repeats)}]
    with open(args.out, "w") as out:
        json.dump(rows, out, indent=2)
        out.write("\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
