"""R1's calibration (results/fedltn.md): before FedLTN's comparison, check that the
claims have room to appear. A candidate regime is kept when, over three seeds, local-only training
stays at or below 0.80 personal accuracy and FedAvg + fine-tuning beats it by at least 5 points.
The floors measured for every candidate: local-only, FedAvg, FedAvg + fine-tuning (the majority-class
rate comes from the partition, see results/fedltn_table.py).

    fedsim sweep --config configs/fedltn_calibration.py --workdir runs/fedltn-calibration

Every candidate shares configs/fedltn.py's setting (bn_cnn, 50 clients, E=2, B=16, lr 0.02 with
momentum 0.5, 10 clients a round, 100 rounds, 10 % validation split) and changes only the partition
and client size (the train_examples subset).
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

CANDIDATES = {  # name: the keys it changes from the shared setting (50 clients); R1 = k8-n100
    "k8-n100": dict(labels_per_client=8, train_examples=5000),  # 100 images a client
}
DROPPED = {  # dropped after seed 0 (or 0-1): local-only above 0.80 or FedAvg+FT < local + 0.05
    "k4": dict(labels_per_client=4, train_examples=10000),  # 200 images a client
    "k5": dict(labels_per_client=5, train_examples=10000),
    "k5-n100": dict(labels_per_client=5, train_examples=5000),
    "dir0.5-n100": dict(partition="dirichlet", alpha=0.5, train_examples=5000),
    "k5-n50": dict(labels_per_client=5, train_examples=2500),
}
FLOORS = ("local_only", "fedavg_ft", "fedavg")


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Each candidate x each floor x three seeds (each seed its own partition), evaluated at rounds 50
    and 100; ordered so that a first pass (seed 0 of the two deciding floors) finishes first."""
    deciding = [
        {**keys, "algorithm": method, "seed": seed, "eval_every": 50}
        for seed in fedltn.SEEDS
        for keys in CANDIDATES.values()
        for method in FLOORS[:2]
    ]
    fedavg = [
        {**keys, "algorithm": FLOORS[2], "seed": seed, "eval_every": 50}
        for keys in CANDIDATES.values()
        for seed in fedltn.SEEDS
    ]
    return deciding + fedavg
