"""R2's client-lr grid (results/fedltn.md): each method of configs/fedltn_r2.py at each client lr on
seed 0 (FedLTN at R1's tuned prune rate); the chosen values (``TUNED`` there) then run on three
seeds. Cells of one method differ only in ``client_lr`` (traceable), so each method's grid trains as
one vmapped program.

    fedsim sweep --config configs/fedltn_r2_tuning.py --workdir runs/fedltn-r2-tuning
    python results/fedltn_table.py tuning runs/fedltn-r2-tuning
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))
r2 = config_module(Path(__file__).with_name("fedltn_r2.py"))

CLIENT_LRS = (0.02, 0.05, 0.1)


def get_config(arg=None):
    return r2.get_config(arg)


def get_sweep():
    """Seed 0 (data seed 0): each method at each client lr."""
    return [
        {"seed": 0, "data_seed": 0, "algorithm": m, "client_lr": lr, **r2.FIXED.get(m, {})}
        for m in r2.METHODS
        for lr in CLIENT_LRS
    ]
