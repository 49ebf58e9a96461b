"""FedLTN's communication against LotteryFL's on R1 (results/fedltn.md): both at their tuned values
(configs/fedltn.py ``TUNED``), three seeds, evaluated every 2 rounds so that the traffic until each
accuracy level is resolved to 2 rounds. LotteryFL never reaches R1's fixed level 0.75, so the claim
is read at the highest level of ``results/fedltn_table.py``'s ``COMMUNICATION_LEVELS`` that both
reach on every seed. Training is the same as R1's cells (evaluation draws no randomness).

    fedsim sweep --config configs/fedltn_communication.py --workdir runs/fedltn-communication
    python results/fedltn_table.py communication runs/fedltn-communication
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

METHODS = ("lotteryfl", "fedltn")


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Both methods, three seeds, seed-major."""
    return [
        {"seed": s, "data_seed": s, "algorithm": a, **fedltn.TUNED[a], "eval_every": 2}
        for s in fedltn.SEEDS
        for a in METHODS
    ]
