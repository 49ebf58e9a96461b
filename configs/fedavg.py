"""FedAvg family on any registered dataset, model and partition.

    fedsim run --config configs/fedavg.py:algorithm=fedadam,alpha=0.1 --workdir runs/fedadam
    fedsim run --config configs/fedavg.py:smoke --workdir /tmp/smoke

ARG keys: any config key (e.g. algorithm, model, dataset, partition, alpha, num_clients), plus
``smoke`` for a seconds-long run. FedAdam/FedYogi/FedAdagrad default to the server and client learning
rates of Reddi et al. 2021 (server 1e-2, client 10^-1.5) unless ARG sets them.
"""

from fedsim.config import apply_arg, base_config, parse_arg

ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


def smoke(config):
    config.update(num_clients=10, clients_per_round=3, rounds=2, local_epochs=1, eval_every=1)
    config.model = "mlp"
    config.model_kwargs = {"hidden": (16,)}


def get_config(arg=None):
    config = base_config()
    config.update(model="cnn", dataset="mnist_subset", partition="dirichlet", rounds=50)
    if parse_arg(arg).get("algorithm") in ADAPTIVE:  # their sections carry server_lr=1e-2
        config.client_lr = 0.0316
    return apply_arg(config, arg, smoke).lock()


def get_sweep():
    """The FedAvg family at one non-IID setting: each algorithm with its own defaults."""
    cells = [{"algorithm": a} for a in ("fedavg", "fedprox", "fedavgm", "scaffold")]
    return cells + [{"algorithm": a, "client_lr": 0.0316} for a in ADAPTIVE]
