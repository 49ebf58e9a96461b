"""FedLTN's Jump-Start (Mugunthan et al., ECCV 2022, Sec. 3.4) against the tuned plain run on R1
(results/fedltn.md): FedLTN at its tuned values (configs/fedltn.py ``TUNED``) without and with
three local-only warm-up rounds (``fedltn.jump_start_rounds=3``), three seeds; the plain cells are
R1's FedLTN runs (same config), and rounds to target are resolved to R1's evaluation every 10 rounds.

    fedsim sweep --config configs/fedltn_jump_start.py --workdir runs/fedltn-jump-start
    python results/fedltn_table.py jump_start runs/fedltn-jump-start
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Plain and Jump-Start per seed, seed-major."""
    return [
        {
            "seed": seed,
            "data_seed": seed,
            "algorithm": "fedltn",
            **fedltn.TUNED["fedltn"],
            "fedltn.jump_start_rounds": warm_up,
        }
        for seed in fedltn.SEEDS
        for warm_up in (0, 3)
    ]
