"""Maestro (Horváth et al., ICML 2024; ``fedsim/algorithms/maestro.py``): layers factorised ``U Vᵀ``, trained with ordered rank dropout and
the hierarchical group lasso, ranks cut as they die; against dense training and truncated SVD.

    fedsim run --config configs/maestro.py --workdir runs/maestro                     # central, FMNIST
    fedsim run --config configs/maestro.py:method=dense --workdir runs/dense
    fedsim run --config configs/maestro.py:method=svd,init_from=runs/dense,init_params_budget=40000 \\
        --workdir runs/svd-40k                                                      # SVD + fine-tuning
    fedsim run --config configs/maestro.py:mode=federated --workdir runs/maestro-fed   # 3 capacity tiers
    fedsim run --config configs/maestro.py:mode=shakespeare --workdir runs/maestro-shakespeare
    fedsim run --config configs/maestro.py:mode=shakespeare_central,method=dense --workdir runs/sk-central
    fedsim sweep --config configs/maestro.py --workdir runs/maestro-grid             # lambda_gl grid

ARG keys: any config key, plus ``method`` (``maestro``, ``dense``: plain training of the dense twin,
``svd``: fixed-rank fine-tuning of ``init_from`` truncated to ``init_params_budget``; give
``rounds=0``-like short runs via ``rounds``), ``mode`` (``central``: one client holding all the data, a
round per epoch and shrinking every epoch; ``federated``: 100 Dirichlet(0.5) clients, 10 per round,
capacity tiers 0.25/0.5/1.0 by client id, shrinking every 5 rounds; ``shakespeare``: the natural
Shakespeare federation with a factorised character Transformer; ``shakespeare_central``: the same
Transformer, larger, trained with Adam on every role's windows pooled into one client, 30 windows per
role and split) and ``smoke``. The Transformer is causal and trained on every position; compare it
with the count-table floors of the same windows, ``python results/count_floors.py
configs/maestro.py:mode=shakespeare_central``.
"""

from fedsim.config import apply_arg, base_config, parse_arg
from fedsim.errors import ConfigError

LAMBDAS = (1e-4, 3e-4, 1e-3)
MODES = ("central", "federated", "shakespeare", "shakespeare_central")
METHODS = ("maestro", "dense", "svd")


def smoke(config):
    config.update(rounds=2, eval_every=1, batch_size=16, train_examples=0)
    if config.num_clients > 1:
        config.update(num_clients=6, clients_per_round=3)
    if config.dataset == "shakespeare":
        config.max_windows_per_client = 20
        config.model_kwargs.update(dim=8, heads=2)
    else:
        config.dataset = "digits"
        config.model_kwargs.update(width=4, hidden=16)


def central(config):
    config.update(
        dataset="fashion_mnist", train_examples=20000, partition="iid", num_clients=1,
        clients_per_round=1, local_epochs=1, rounds=10, batch_size=64, eval_every=1,
        model="cnn", client_lr=0.05, client_momentum=0.9,
    )  # fmt: skip
    config.maestro.shrink_every = 1
    config.model_kwargs = {"width": 8, "hidden": 128, "factorized": True}


def federated(config):
    config.update(
        dataset="fashion_mnist", train_examples=20000, partition="dirichlet", alpha=0.5,
        num_clients=100, clients_per_round=10, local_epochs=1, rounds=60, batch_size=32,
        eval_every=10, model="cnn", client_lr=0.05, client_momentum=0.9,
    )  # fmt: skip
    config.maestro.update(shrink_every=5, rank_tiers=(0.25, 0.5, 1.0))
    config.model_kwargs = {"width": 8, "hidden": 128, "factorized": True}


def shakespeare(config):
    config.update(
        dataset="shakespeare", partition="natural", num_clients=50, clients_per_round=10,
        local_epochs=1, rounds=40, batch_size=20, eval_every=10, max_windows_per_client=200,
        eval_batch_size=500, model="transformer", client_lr=0.1, client_momentum=0.9,
    )  # fmt: skip
    config.maestro.update(shrink_every=5, lambda_gl=3e-3)
    config.model_kwargs = {"dim": 32, "heads": 2, "layers": 1, "factorized": True}


def shakespeare_central(config):
    config.update(
        dataset="shakespeare", partition="iid", num_clients=1, clients_per_round=1,
        max_windows_per_client=30, local_epochs=1, rounds=3, batch_size=32, eval_every=1,
        eval_batch_size=500, model="transformer", client_optimizer="adam", client_lr=3e-3,
        client_momentum=0.0,
    )  # fmt: skip
    config.maestro.shrink_every = 1
    config.model_kwargs = {"dim": 128, "heads": 4, "layers": 2, "factorized": True}


def get_config(arg=None):
    values = parse_arg(arg)
    mode, method = values.pop("mode", "central"), values.pop("method", "maestro")
    if mode not in MODES or method not in METHODS:
        raise ConfigError(
            f"mode={mode!r}, method={method!r}; choose mode from {MODES}, method from {METHODS}"
        )
    config = base_config()
    config.algorithm = "maestro"
    config.maestro.update(lambda_gl=3e-4, epsilon_ps=1e-5, weight_decay=1e-4)
    modes = {
        "central": central, "federated": federated, "shakespeare": shakespeare,
        "shakespeare_central": shakespeare_central,
    }  # fmt: skip
    modes[mode](config)
    if method == "maestro" and mode == "central":
        # measured: at 0.05 (dense's rate) the first epoch of ordered dropout diverged (NaN) twice
        config.client_lr = 0.02
    if method == "dense":
        config.algorithm = "fedavg"
        config.model_kwargs.factorized = False
    if method == "svd":
        config.maestro.update(lambda_gl=0.0, ordered_dropout=False, shrink_every=0)
    return apply_arg(config, values, smoke).lock()


def get_sweep():
    """Maestro's group-lasso strength (the accuracy/size trade-off)."""
    return [{"maestro.lambda_gl": lam} for lam in LAMBDAS]
