"""Regime R2 of results/fedltn.md: FedBN's feature shift (Li et al., ICLR 2021), where personal
BatchNorm should matter, as calibrated by configs/fedltn_r2_calibration.py: 16 clients of 100
Fashion-MNIST images in four intensity domains (inverted or not, half contrast or not;
``fedsim/data/feature_shift.py``), mildly label-skewed (Dirichlet 1.0), every client every round
(FedBN's participation) for 50 rounds; otherwise R1's shared setting (configs/fedltn.py: bn_cnn, E=2,
B=16, momentum 0.5, 10 % validation split), each method at the client lr configs/fedltn_r2_tuning.py
chose on seed 0.

    fedsim sweep --config configs/fedltn_r2.py --workdir runs/fedltn-r2

``regime=r2_16domains`` is R2 before calibration (its table on the results page ran every method
at lr 0.02 and FedLTN at its default prune rate).
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

METHODS = ("fedavg", "fedbn", "fedavg_ft", "ditto", "fedltn", "local_only")
FIXED = {"fedltn": dict(fedltn.TUNED["fedltn"])}  # R1's tuned prune rate, not re-tuned here
# each method's client lr chosen on seed 0 by configs/fedltn_r2_tuning.py (results/fedltn.md)
CHOSEN_LR = {"fedavg": 0.1, "fedbn": 0.1, "fedavg_ft": 0.1, "ditto": 0.1, "fedltn": 0.05,
             "local_only": 0.02}  # fmt: skip
TUNED = {m: {"client_lr": CHOSEN_LR[m], **FIXED.get(m, {})} for m in METHODS}


def get_config(arg=None):
    return fedltn.get_config(f"regime=r2,{arg}" if arg else "regime=r2")


def get_sweep():
    """The four methods at their ``TUNED`` values, three seeds each (each seed its own partition),
    seed-major; seed 0's cells are the tuning grid's."""
    return [
        {"seed": s, "data_seed": s, "algorithm": a, **TUNED[a]}
        for s in fedltn.SEEDS
        for a in METHODS
    ]
