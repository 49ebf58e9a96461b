"""R1's baselines at their authors' local work (results/fedltn.md, beside the equal-budget rows of
configs/fedltn.py): Sub-FedAvg as its script runs it (E=5, masks compared after epochs 1 and 5,
pruned to 30 % zeros: target density 0.7), and LotteryFL at its README's local work per
participation: 60 epochs of 40 images at batch 32 are 120 steps, which R1's 90 training images at
batch 16 (6 steps an epoch) match with E=20. Every other value is R1's, at each method's tuned values
(configs/fedltn.py ``TUNED``); three seeds.

    fedsim sweep --config configs/fedltn_published.py --workdir runs/fedltn-published
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

PUBLISHED = {
    "subfedavg": {"local_epochs": 5, "subfedavg.target_density": 0.7},
    "lotteryfl": {"local_epochs": 20},
}


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Both baselines per seed, seed-major."""
    return [
        {"seed": s, "data_seed": s, "algorithm": a, **fedltn.TUNED[a], **keys}
        for s in fedltn.SEEDS
        for a, keys in PUBLISHED.items()
    ]
