"""A vmapped grid of 8 seeds against the same 8 runs one after another, timed in one process.

    python benchmarks/grid_vs_sequential.py [--config configs/quickstart.py:smoke] [--rounds N]

Writes ``benchmarks/results/grid_<platform>.json``: both wall clocks (compilation included, each side
with its own fresh persistent compilation cache, as ``fedsim sweep`` uses), their ratio, and the
largest per-seed difference of the final global accuracy.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax

from fedsim import driver
from fedsim.config import load_config
from fedsim.sweep import use_compile_cache


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/quickstart.py:smoke")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    configs = []
    for seed in range(args.seeds):
        config = load_config(args.config)
        with config.unlocked():
            config.update(seed=seed, data_seed=0, rounds=args.rounds, eval_every=args.rounds)
        configs.append(config)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        use_compile_cache(tmp / "sequential_cache")
        t = time.perf_counter()
        sequential = [driver.run(c, tmp / f"seq{i}", progress=False) for i, c in enumerate(configs)]
        sequential_s = time.perf_counter() - t
        use_compile_cache(tmp / "grid_cache")
        t = time.perf_counter()
        grid = driver.run_grid(configs, [tmp / f"grid{i}" for i in range(len(configs))], False)
        grid_s = time.perf_counter() - t
    row = {
        "suite": "grid",
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "config": args.config,
        "seeds": args.seeds,
        "rounds": args.rounds,
        "sequential_s": sequential_s,
        "grid_s": grid_s,
        "speedup_grid_vs_sequential": sequential_s / grid_s,
        "grid_compile_s": grid[0]["compile_s"],
        "sequential_compile_s_mean": sum(s["compile_s"] for s in sequential) / len(sequential),
        "max_abs_diff_global_acc": max(
            abs(a["global_acc"] - b["global_acc"]) for a, b in zip(grid, sequential, strict=True)
        ),
        "global_acc_per_seed": [s["global_acc"] for s in grid],
    }
    out = Path("benchmarks/results") / f"grid_{jax.devices()[0].platform}.json"
    out.write_text(json.dumps([row], indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
