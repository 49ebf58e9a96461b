"""FedLTN's ablation on R1 (results/fedltn.md): server momentum {0, 0.9} x server step {1, 0.1} x
personal BatchNorm re-estimation {off, on}, every other value FedLTN's tuned one
(configs/fedltn.py ``TUNED``), three seeds; then the target density {0.3, 0.5, 1.0} (1.0: no
pruning, FedLTN's personal BatchNorm and server momentum alone), which separates the cost of a 10x
sparser model from the rest of the method.

    fedsim sweep --config configs/fedltn_ablation.py --workdir runs/fedltn-ablation
"""

import itertools
from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

MOMENTA = (0.0, 0.9)
SERVER_LRS = (1.0, 0.1)
REESTIMATE = (False, True)
DENSITIES = (0.3, 0.5, 1.0)


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Eight cells a seed, seed-major, then the three densities a seed."""
    tuned = {k: v for k, v in fedltn.TUNED["fedltn"].items() if k != "fedltn.server_lr"}
    densities = [
        {"seed": s, "data_seed": s, "algorithm": "fedltn", **tuned, "fedltn.target_density": d}
        for s in fedltn.SEEDS
        for d in DENSITIES
    ]
    return [
        {
            "seed": seed,
            "data_seed": seed,
            "algorithm": "fedltn",
            **tuned,
            "fedltn.server_momentum": momentum,
            "fedltn.server_lr": lr,
            "reestimate_bn": bn,
        }
        for seed in fedltn.SEEDS
        for momentum, lr, bn in itertools.product(MOMENTA, SERVER_LRS, REESTIMATE)
    ] + densities
