"""FedLTN and its baselines on the paper-style pathological split (Mugunthan et al.,
ECCV 2022; ``fedsim/algorithms/fedltn.py``):
Fashion-MNIST (offline), 100 clients with two labels each ('#C=2'), 10 per round, the small BN CNN.
Clients are small as in LotteryFL (40 images) and Sub-FedAvg (500): a seeded 6,000-image subset of the
training set, 60 per client (54 to train, 6 to validate); ``train_examples=0`` uses all 60,000.

    fedsim run --config configs/fedltn.py --workdir runs/fedltn
    fedsim run --config configs/fedltn.py:algorithm=ditto,seed=1 --workdir runs/ditto-1
    fedsim run --config configs/fedltn.py:dataset=cifar10,model=resnet18 --workdir runs/cifar
    fedsim sweep --config configs/fedltn.py --workdir runs/fedltn-grid
    fedsim run --config configs/fedltn.py:smoke --workdir /tmp/fedltn-smoke

ARG keys: any config key, plus ``smoke`` (seconds-long run) and ``lean`` (lean start: density budgets
1.0/0.5/0.25 by client). Jump-Start is the key ``fedltn.jump_start_rounds=3``. Every method of the comparison shares this setting, including the 10 % local
validation split, so all train on the same 90 % of each client's data.
"""

from fedsim.config import apply_arg, base_config, parse_arg

METHODS = (
    "fedavg",
    "fedavg_ft",
    "fedbn",
    "ditto",
    "local_only",
    "lotteryfl",
    "subfedavg",
    "fedltn",
)
SEEDS = (0, 1, 2)


PRUNED = ("lotteryfl", "subfedavg", "fedltn")  # the methods with pruning sections


def smoke(config):
    config.update(num_clients=8, clients_per_round=4, rounds=3, local_epochs=2, eval_every=1)
    config.dataset = "digits"
    for name in PRUNED:
        config[name].update(prune_threshold=0.0, target_density=0.5)
    config.model_kwargs = {"width": 4}


def setting(algorithm: str):
    """The shared setting; each method's section keeps its own published defaults (LotteryFL starts
    pruning above 20 % accuracy, Sub-FedAvg prunes 10 % per event)."""
    config = base_config()
    config.update(
        algorithm=algorithm,
        model="bn_cnn",
        dataset="fashion_mnist",
        train_examples=6000,
        partition="label_quantity",
        labels_per_client=2,
        num_clients=100,
        clients_per_round=10,
        rounds=100,
        local_epochs=2,
        batch_size=16,
        client_lr=0.02,
        client_momentum=0.5,
        val_fraction=0.1,
        eval_every=10,
    )
    return config


def get_config(arg=None):
    values = parse_arg(arg)
    config = setting(values.pop("algorithm", "fedltn"))
    if values.pop("lean", False):
        config.fedltn.density_budgets = (1.0, 0.5, 0.25)
    return apply_arg(config, values, smoke).lock()


def get_sweep():
    """Every method of the comparison, three seeds each (24 runs)."""
    return [{"algorithm": a, "seed": s} for a in METHODS for s in SEEDS]
