"""FedBuff (Nguyen et al., AISTATS 2022) against synchronous FedAvg with stragglers: rounds and
simulated time to a target accuracy.

    fedsim sweep --config configs/fedbuff.py --workdir runs/fedbuff
    python results/fedbuff_table.py runs/fedbuff       # rounds and sim_time to TARGET_ACC
    fedsim run --config configs/fedbuff.py:smoke --workdir /tmp/fedbuff

The quickstart's setting (FedAvg CNN, mnist_subset, 100 clients, Dir(0.5), K = 10, E = 2) with
simulated latencies: each client's typical job log-normal (sigma 0.5), each job's jitter 0.25, and 20 %
stragglers whose steps take 5x as long. Synchronous FedAvg waits for its slowest sampled client every
round, or (``straggler_work=0.2``) has its stragglers do a fifth of their steps so that they finish
in time; FedBuff keeps 20 (or 50) clients training and steps each time 10 updates have arrived.
100 rounds (server steps) each, evaluated every 2; three seeds on one partition. ARG keys: any config
key.
"""

from pathlib import Path

from fedsim.config import apply_arg, config_module

quickstart = config_module(Path(__file__).with_name("quickstart.py"))
TARGET_ACC = 0.9  # global_acc a cell must reach (results/fedbuff_table.py)
SEEDS = (0, 1, 2)
CELLS = (
    {"algorithm": "fedavg"},
    {"algorithm": "fedavg", "straggler_work": 0.2},
    {"algorithm": "fedbuff"},
    {"algorithm": "fedbuff", "fedbuff.concurrency": 50},
)


def smoke(config):
    quickstart.smoke(config)
    config.num_clients = 50  # room for fedbuff.concurrency=50


def get_config(arg=None):
    config = quickstart.get_config()
    config.unlock()
    config.update(
        algorithm="fedbuff", rounds=100, eval_every=2, latency_sigma=0.5, latency_jitter=0.25,
        straggler_fraction=0.2, straggler_work=1.0, straggler_slowdown=5.0,
    )  # fmt: skip
    return apply_arg(config, arg, smoke).lock()


def get_sweep():
    """Each cell on three training seeds of one partition."""
    return [{**cell, "seed": seed, "data_seed": 0} for cell in CELLS for seed in SEEDS]
