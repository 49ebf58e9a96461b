"""Uplink compression against FedLTN's sparse models (results/compression.md): accuracy against the
bytes actually sent, on FedLTN's regime R1 (configs/fedltn.py: Fashion-MNIST label skew, 50 clients
of 100 images, 10 a round, 100 rounds, bn_cnn, E=2, B=16, lr 0.02 with momentum 0.5).

    fedsim sweep --config configs/compression.py --workdir runs/compression
    python results/compression_table.py runs/compression
    fedsim plot --workdir runs/compression --out results/compression

Methods (``fedsim/algorithms/compressed.py``; bytes by ``fedsim/compress/uplink.py``): FedAvg; top-k
with error feedback at 1 % and 10 % of each layer's coordinates (Stich et al. 2018); QSGD at 2 and 4
bits (Alistarh et al. 2017); scaled sign with error feedback (Karimireddy et al. 2019); FedLTN at its
tuned values (``TUNED``). FedAvg's and FedLTN's cells are R1's, so their runs are shared with
configs/fedltn.py's sweep. Three seeds, each its own partition.
"""

from pathlib import Path

from fedsim.config import config_module

fedltn = config_module(Path(__file__).with_name("fedltn.py"))

METHODS = {
    "FedAvg": {"algorithm": "fedavg"},
    "top-k 1 %": {"algorithm": "fedavg_topk", "fedavg_topk.fraction": 0.01},
    "top-k 10 %": {"algorithm": "fedavg_topk", "fedavg_topk.fraction": 0.1},
    "QSGD 2 bits": {"algorithm": "fedavg_qsgd", "fedavg_qsgd.bits": 2},
    "QSGD 4 bits": {"algorithm": "fedavg_qsgd", "fedavg_qsgd.bits": 4},
    "sign": {"algorithm": "fedavg_sign"},
    "FedLTN": {"algorithm": "fedltn", **fedltn.TUNED["fedltn"]},
}


def get_config(arg=None):
    return fedltn.get_config(arg)


def get_sweep():
    """Every method, three seeds, seed-major."""
    return [{"seed": s, "data_seed": s, **keys} for s in fedltn.SEEDS for keys in METHODS.values()]
