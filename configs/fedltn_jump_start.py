"""FedLTN's Jump-Start (Mugunthan et al., ECCV 2022, Sec. 3.4) against the tuned plain run on R1
(results/fedltn.md): FedLTN at its tuned values (configs/fedltn.py ``TUNED``) without and with
three local-only warm-up rounds (``fedltn.jump_start_rounds=3``), three seeds, at target density
0.3, evaluated every 2 rounds. At the tuned density 0.1 the plain run ends only 4 points above
local-only, so 95 % of it is local-only's level (that comparison, evaluated every 10 rounds, is in
results/fedltn.md: ``SETTINGS = ({},)`` reruns it); at 0.3 the plain run ends ~7 points above
local-only, so the target lies above it, and evaluation every 2 rounds resolves the rounds to it.

    fedsim sweep --config configs/fedltn_jump_start.py --workdir runs/fedltn-jump-start
    python results/fedltn_table.py jump_start runs/fedltn-jump-start
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))


def get_config(arg=None):
    return fedltn.get_config(arg)


SETTINGS = ({"fedltn.target_density": 0.3, "eval_every": 2},)  # target density, evaluation period


def get_sweep():
    """Plain and Jump-Start per seed and setting, seed-major."""
    return [
        {
            "seed": seed,
            "data_seed": seed,
            "algorithm": "fedltn",
            **fedltn.TUNED["fedltn"],
            **keys,
            "fedltn.jump_start_rounds": warm_up,
        }
        for seed in fedltn.SEEDS
        for keys in SETTINGS
        for warm_up in (0, 3)
    ]
