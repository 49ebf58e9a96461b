"""LotteryFL on the FedLTN comparison setting (see configs/fedltn.py and
``fedsim/algorithms/lotteryfl.py``).

    fedsim run --config configs/lotteryfl.py --workdir runs/lotteryfl
    fedsim run --config configs/lotteryfl.py:smoke --workdir /tmp/lotteryfl-smoke
    fedsim sweep --config configs/lotteryfl.py --workdir runs/lotteryfl-grid

ARG keys: as configs/fedltn.py (any config key, ``smoke``).
"""

from pathlib import Path

from fedsim.config import config_module

fedltn_config = config_module(Path(__file__).with_name("fedltn.py"))
RATES = (0.1, 0.3)


def get_config(arg=None):
    return fedltn_config.get_config(",".join(filter(None, ["algorithm=lotteryfl", arg])))


def get_sweep():
    """Three seeds, and the pruning rate around the published default."""
    return [{"seed": s} for s in fedltn_config.SEEDS] + [{"lotteryfl.prune_rate": r} for r in RATES]
