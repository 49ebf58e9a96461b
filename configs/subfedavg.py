"""Sub-FedAvg (unstructured) on the FedLTN comparison setting (see configs/fedltn.py and
``fedsim/algorithms/subfedavg.py``).

    fedsim run --config configs/subfedavg.py --workdir runs/subfedavg
    fedsim run --config configs/subfedavg.py:smoke --workdir /tmp/subfedavg-smoke
    fedsim sweep --config configs/subfedavg.py --workdir runs/subfedavg-grid

ARG keys: as configs/fedltn.py (any config key, ``smoke``).
"""

from pathlib import Path

from fedsim.config import config_module

fedltn_config = config_module(Path(__file__).with_name("fedltn.py"))
RATES = (0.05, 0.2)


def get_config(arg=None):
    return fedltn_config.get_config(",".join(filter(None, ["algorithm=subfedavg", arg])))


def get_sweep():
    """Three seeds, and the pruning rate around the published default."""
    return [{"seed": s} for s in fedltn_config.SEEDS] + [{"subfedavg.prune_rate": r} for r in RATES]
