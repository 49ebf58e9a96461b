"""Maestro (Horváth et al., ICML 2024; ``fedsim/algorithms/maestro.py``): layers factorised ``U Vᵀ``, trained with ordered rank dropout and
the hierarchical group lasso, ranks cut as they die; against dense training, truncated SVD and
fixed-rank factorised training.

    fedsim run --config configs/maestro.py --workdir runs/maestro                     # central, FMNIST
    fedsim run --config configs/maestro.py:mode=federated --workdir runs/maestro-fed   # 3 capacity tiers
    fedsim run --config configs/maestro.py:mode=shakespeare --workdir runs/maestro-shakespeare
    fedsim run --config configs/maestro.py:mode=shakespeare_central,method=dense --workdir runs/sk-central
    fedsim sweep --config configs/maestro.py --workdir runs/maestro-grid             # lambda_gl grid

ARG keys: any config key, plus ``method``, ``mode`` and ``smoke``. ``method``: ``maestro``;
``dense``: plain training of the dense twin (FedAvg of one client); ``svd``: fine-tuning of
``init_from``'s truncated SVD at fixed ranks (``init_params_budget`` with ``init_rank_allocation``
``energy`` or the ``uniform`` strawman, or ``init_macs_budget`` with ``macs``); ``fixed_rank``:
factorised training from the seed's initialisation at fixed ranks (``init_ranks`` or
``init_ranks_from``, e.g. a Maestro run's final ranks), without ordered dropout or group lasso — what
Maestro's ordering and lasso buy. ``mode``: ``central`` (one client holding all the data, a round per
epoch, one optimiser state for the whole run, lr x0.1 at 50 % and 75 %, shrinking every epoch; every
method at the same lr, momentum, weight decay, batch and epochs); ``federated`` (100 Dirichlet(0.5)
clients, 10 per round, capacity tiers 0.25/0.5/1.0 by client id, shrinking every 5 rounds);
``shakespeare`` (the natural Shakespeare federation with a factorised character Transformer);
``shakespeare_central`` (the same Transformer, larger, trained with Adam on every role's windows
pooled into one client, 30 windows per role and split, 3 epochs, one optimiser state, lr x0.1 at
50 % and 75 %, no weight decay, for every method). The Transformer is causal and trained on every
position; compare it with the count-table floors of the same windows, ``python
results/count_floors.py configs/maestro.py:mode=shakespeare_central``.

The central comparison (``results/maestro.md``; seeds via ``seed=S``; P, M = a Maestro run's final
``params`` and ``macs_p100`` in its ``metrics.jsonl``; ``C=configs/maestro.py``):

    fedsim run --config $C:method=dense --workdir runs/dense
    fedsim sweep --config $C --workdir runs/maestro-grid        # maestro.lambda_gl in LAMBDAS
    fedsim run --config $C:method=svd,init_from=runs/dense,init_params_budget=P --workdir runs/svd-energy-P
    fedsim run --config $C:method=svd,init_from=runs/dense,init_rank_allocation=macs,init_macs_budget=M \
        --workdir runs/svd-macs-M
    fedsim run --config $C:method=svd,init_from=runs/dense,init_rank_allocation=uniform,init_params_budget=P \
        --workdir runs/svd-uniform-P                                # the strawman
    fedsim run --config $C:method=fixed_rank,init_ranks_from=runs/maestro-grid/<cell> --workdir runs/fixed-<cell>

Each ``svd`` run fine-tunes for ``rounds`` epochs (the shared budget; add ``rounds=...`` to change
it); the truncated SVD before fine-tuning is the run's initial model (``results/maestro_table.py``
scores it with ``truncated_svd``).
"""

from fedsim.config import apply_arg, base_config, parse_arg
from fedsim.errors import ConfigError

LAMBDAS = (1e-6, 1e-3, 1e-2)
MODES = ("central", "federated", "shakespeare", "shakespeare_central")
METHODS = ("maestro", "dense", "svd", "fixed_rank")
# central mode's one training budget for every method (official Maestro: SGD 0.9, decay 1e-4, x0.1 at
# 50 % and 75 %); lr 0.02: at 0.05 Maestro's first epoch diverged (NaN) twice (measured)
EPOCHS, LR, MOMENTUM, WEIGHT_DECAY, BATCH = 20, 0.02, 0.9, 1e-4, 64


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
        clients_per_round=1, local_epochs=1, rounds=EPOCHS, batch_size=BATCH, eval_every=1,
        model="cnn", client_lr=LR, client_momentum=MOMENTUM, client_lr_schedule="step",
        keep_client_optimizer_state=True,
    )  # fmt: skip
    config.maestro.update(shrink_every=1, weight_decay=WEIGHT_DECAY)
    config.fedavg.weight_decay = WEIGHT_DECAY
    config.model_kwargs = {"width": 8, "hidden": 128, "factorized": True}


def federated(config):
    config.update(
        dataset="fashion_mnist", train_examples=20000, partition="dirichlet", alpha=0.5,
        num_clients=100, clients_per_round=10, local_epochs=1, rounds=60, batch_size=32,
        eval_every=10, model="cnn", client_lr=0.05, client_momentum=0.9,
    )  # fmt: skip
    # lambda 3e-3 (seed 0): params_p100 99.6 % of dense, acc 0.716; 1e-2: 88 %, acc 0.543 (measured)
    config.maestro.update(shrink_every=5, rank_tiers=(0.25, 0.5, 1.0), lambda_gl=3e-3)
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
        client_momentum=0.0, client_lr_schedule="step", keep_client_optimizer_state=True,
    )  # fmt: skip
    config.maestro.update(shrink_every=1, weight_decay=0.0)
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
    config.maestro.update(lambda_gl=1e-3, cut="relative", epsilon_ps=1e-3, weight_decay=1e-4)
    modes = {
        "central": central, "federated": federated, "shakespeare": shakespeare,
        "shakespeare_central": shakespeare_central,
    }  # fmt: skip
    modes[mode](config)
    if method == "dense":
        config.algorithm = "fedavg"
        config.model_kwargs.factorized = False
    if method in ("svd", "fixed_rank"):
        config.maestro.update(lambda_gl=0.0, ordered_dropout=False, shrink_every=0)
    config = apply_arg(config, values, smoke)
    if method == "fixed_rank" and not (config.init_ranks or config.init_ranks_from):
        raise ConfigError("method='fixed_rank' needs init_ranks or init_ranks_from")
    return config.lock()


def get_sweep():
    """Maestro's group-lasso strength (the accuracy/size trade-off), from the official 1e-6 up."""
    return [{"maestro.lambda_gl": lam} for lam in LAMBDAS]
