"""FedLTN and its baselines (Mugunthan et al., ECCV 2022; ``fedsim/algorithms/fedltn.py``) on
Fashion-MNIST (offline) with the small BN CNN.

Regime R1 (the default, calibrated in ``configs/fedltn_calibration.py``: local-only training stays
below 0.80 and FedAvg + fine-tuning beats it by 5 points or more, so personalisation claims can be
observed; see results/fedltn.md): a seeded 5,000-image subset, 50 clients with eight labels each
('#C=8', 100 images: 90 to train, 10 to validate), 10 per round (each client takes part ~20 times in
100 rounds, enough prune events to reach the 10 % target density). Regime R2 (``regime=r2``) is
FedBN's feature shift, calibrated in ``configs/fedltn_r2_calibration.py``: 16 clients of 100 images
in four intensity domains (inverted or not, half contrast or not; ``fedsim/data/feature_shift.py``),
mildly label-skewed (Dirichlet 1.0), all 16 every round for 50 rounds; ``regime=r2_16domains`` is
R2 before calibration (200 images a client, each client its own rotation x inversion x contrast
domain). ``regime=paper`` is the earlier paper-style pathological split (100 clients of 60 images with
two labels, 10 per round), where local-only training already scores ~0.95.

    fedsim run --config configs/fedltn.py --workdir runs/fedltn
    fedsim run --config configs/fedltn.py:algorithm=ditto,seed=1 --workdir runs/ditto-1
    fedsim run --config configs/fedltn.py:regime=paper --workdir runs/fedltn-paper
    fedsim sweep --config configs/fedltn.py:regime=r2 --workdir runs/fedltn-r2
    fedsim sweep --config configs/fedltn.py --workdir runs/fedltn-r1
    fedsim run --config configs/fedltn.py:smoke --workdir /tmp/fedltn-smoke

ARG keys: any config key, plus ``regime`` (``r1``, ``r2``, ``r2_16domains`` or ``paper``), ``smoke`` (seconds-long run) and
``lean`` (lean start: density budgets 1.0/0.5/0.25 by client). Jump-Start is the key
``fedltn.jump_start_rounds=3``. Every method of the comparison shares the setting, including the 10 %
local validation split, so all train on the same 90 % of each client's data.
"""

from fedsim.config import apply_arg, base_config, parse_arg
from fedsim.errors import ConfigError

METHODS = (
    "fedavg",
    "fedavgm",
    "fedavg_ft",
    "fedbn",
    "ditto",
    "local_only",
    "lotteryfl",
    "subfedavg",
    "fedltn",
)
SEEDS = (0, 1, 2)
# each method's values chosen on seed 0 by configs/fedltn_tuning.py (results/fedltn.md, tuning table)
TUNED = {method: {} for method in METHODS}  # {} = the shared setting (client_lr 0.02) won
for _method in ("fedavg", "fedavgm", "fedavg_ft", "fedbn", "ditto", "local_only", "lotteryfl"):
    TUNED[_method] = {"client_lr": 0.1}  # the grid's top (local-only: 0.7561 vs 0.7560 at 0.05)
TUNED["fedltn"] = {"fedltn.prune_rate": 0.3}
TUNED["subfedavg"] = {"subfedavg.prune_rate": 0.05}


PRUNED = ("lotteryfl", "subfedavg", "fedltn")  # the methods with pruning sections


def smoke(config):
    config.update(num_clients=8, clients_per_round=4, rounds=3, local_epochs=2, eval_every=1)
    config.dataset = "digits"
    for name in PRUNED:
        config[name].update(prune_threshold=0.0, target_density=0.5)
    config.model_kwargs = {"width": 4}


FEATURE_SHIFT = dict(  # R2's shared keys: mild Dirichlet(1.0) label skew, every client every round
    partition="dirichlet",
    alpha=1.0,
    num_clients=16,
    clients_per_round=16,
    rounds=50,
    feature_shift=True,
)
REGIMES = {
    "r1": dict(
        train_examples=5000, partition="label_quantity", labels_per_client=8, num_clients=50
    ),
    # feature shift (FedBN's setting), calibrated in configs/fedltn_r2_calibration.py: 16 clients
    # of 100 images in 4 intensity domains (inversion x half contrast, 4 clients each)
    "r2": dict(FEATURE_SHIFT, train_examples=1600, feature_shift_transforms="invert,contrast"),
    # R2 before calibration: 16 clients of 200 images, each its own domain (rotation x inversion x
    # contrast), where local-only training beat FedBN
    "r2_16domains": dict(FEATURE_SHIFT, train_examples=3200),
    "paper": dict(
        train_examples=6000, partition="label_quantity", labels_per_client=2, num_clients=100
    ),
}


def setting(algorithm: str, regime: str = "r1"):
    """The shared setting of ``regime``; each method's section keeps its own published defaults
    (LotteryFL starts pruning above 20 % accuracy, Sub-FedAvg prunes 10 % per event); FedAvgM moves
    the server by ``server_lr / (1 - momentum)`` = 1 mean update, like FedLTN."""
    if regime not in REGIMES:
        raise ConfigError(f"regime={regime!r}; choose one of: {', '.join(REGIMES)}")
    config = base_config()
    config.update(
        algorithm=algorithm,
        model="bn_cnn",
        dataset="fashion_mnist",
        clients_per_round=10,
        rounds=100,
        local_epochs=2,
        batch_size=16,
        client_lr=0.02,
        client_momentum=0.5,
        val_fraction=0.1,
        eval_every=10,
    )
    config.update(REGIMES[regime])
    config.fedavgm.server_lr = 0.1
    return config


def get_config(arg=None):
    values = parse_arg(arg)
    config = setting(values.pop("algorithm", "fedltn"), values.pop("regime", "r1"))
    if values.pop("lean", False):
        config.fedltn.density_budgets = (1.0, 0.5, 0.25)
    return apply_arg(config, values, smoke).lock()


def get_sweep():
    """Every method of the comparison at its tuned values (``TUNED``), three seeds each (27 runs,
    seed-major; each seed draws its own partition, and seed 0's cells are the tuning grid's)."""
    return [{"seed": s, "data_seed": s, "algorithm": a, **TUNED[a]} for s in SEEDS for a in METHODS]
