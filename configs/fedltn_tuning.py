"""The hyper-parameter grid of FedLTN's comparison (results/fedltn.md): every method, FedLTN included,
tuned on the same small grid on one seed of R1 (configs/fedltn.py); the chosen values then run on
three seeds (configs/fedltn.py's ``get_sweep``).

    fedsim sweep --config configs/fedltn_tuning.py --workdir runs/fedltn-tuning

Cells of one method that differ only in traceable values (``client_lr``, ``ditto.lam``,
``fedltn.server_lr``, ``fedavgm.server_lr``) train as one vmapped program.
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

CLIENT_LRS = (0.01, 0.02, 0.05, 0.1)
# method: values of its own keys, one key at a time at the default client lr; each default (Ditto's
# lam 0.1, the server lr 0.1, the prune rates 0.2/0.2/0.1, one fine-tuning epoch) is its client_lr=0.02
# cell
GRIDS = {
    "ditto": {"ditto.lam": (0.01, 1.0)},
    "fedavgm": {"fedavgm.server_lr": (0.05, 0.2)},
    "fedltn": {"fedltn.server_lr": (0.05, 0.2), "fedltn.prune_rate": (0.1, 0.3)},
    "lotteryfl": {"lotteryfl.prune_rate": (0.1, 0.3)},
    "subfedavg": {"subfedavg.prune_rate": (0.05, 0.2)},
    "fedavg_ft": {"finetune_epochs": (3,)},
}


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Seed 0 (data seed 0): each method at each client lr, then each of its own values at the
    default client lr."""
    base = {"seed": 0, "data_seed": 0}
    cells = [
        {**base, "algorithm": method, "client_lr": lr}
        for method in fedltn.METHODS
        for lr in CLIENT_LRS
    ]
    for method, keys in GRIDS.items():
        for key, values in keys.items():
            cells += [{**base, "algorithm": method, key: v} for v in values]
    return cells
