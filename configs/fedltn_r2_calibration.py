"""R2's calibration (results/fedltn.md): the feature-shift regime R2 first had (``regime=r2_16domains``
of configs/fedltn.py: 16 clients of 200 images, each its own domain) let local-only training win (0.812 against FedBN's 0.766), so personal BatchNorm's
claim has no room there. Candidates shrink each client's data, (``n32``) give each transform two
clients, train at R1's tuned client lr 0.1, and (``intensity``) keep only the shifts a per-channel
BatchNorm can undo (inversion x contrast: 4 domains of 4 clients each, no rotation); a candidate is
kept when personal BatchNorm (FedBN) beats local-only on seed 0. ``n16x100-intensity`` was kept
(FedBN 0.828 against local-only's 0.729) and is R2 now.

    fedsim sweep --config configs/fedltn_r2_calibration.py --workdir runs/fedltn-r2-calibration

Every candidate keeps R2's setting (Dirichlet 1.0, full participation, otherwise R1's shared
setting) and changes only the keys it names.
"""

from pathlib import Path

from fedsim.config import config_module

r2 = config_module(Path(__file__).with_name("fedltn_r2.py"))

INTENSITY = dict(feature_shift_transforms="invert,contrast", client_lr=0.1)
CANDIDATES = {  # name: the keys it changes from R2 (16 clients x 200 images, lr 0.02, 50 rounds)
    "n16x100": dict(train_examples=1600),
    "n32x100": dict(num_clients=32, clients_per_round=32, train_examples=3200),
    "n16x100-lr0.1": dict(train_examples=1600, client_lr=0.1),
    "n16x100-intensity": dict(train_examples=1600, **INTENSITY),
}
FLOORS = ("local_only", "fedbn")


def get_config(arg=None):
    return r2.get_config(f"regime=r2_16domains,{arg}" if arg else "regime=r2_16domains")


def get_sweep():
    """Each candidate x local-only and FedBN, seed 0."""
    return [{"algorithm": a, "seed": 0, **keys} for keys in CANDIDATES.values() for a in FLOORS]
