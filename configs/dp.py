"""DP-FedAvg (McMahan et al. 2018) on Fashion-MNIST, 100 clients, Dir(0.5): accuracy against epsilon.

    fedsim run --config configs/dp.py:epsilon=4 --workdir runs/dp_eps4
    fedsim sweep --config configs/dp.py --workdir runs/dp        # epsilon 1, 2, 4, 8 and no DP
    fedsim run --config configs/dp.py:smoke --workdir /tmp/dp    # seconds, on bundled digits

Poisson client sampling (q = 0.2: 20 expected clients a round), 30 rounds of one local epoch, user-level
(epsilon, 1e-5)-DP accounted with RDP; ``epsilon`` in ARG sets ``dp_target_epsilon`` (the noise
multiplier is computed from it), ``epsilon=0`` trains without DP. The model is a small FedAvg CNN
(conv 4/8, dense 32: 13,818 parameters): the noise norm grows with the square root of the parameter
count, so DP favours small models. Other ARG keys: any config key (dp_clip, dp_target_quantile, ...).
"""

from fedsim.config import apply_arg, base_config, parse_arg

EPSILONS = (1.0, 2.0, 4.0, 8.0)


def smoke(config):
    config.update(
        dataset="digits", num_clients=10, clients_per_round=5, rounds=3, local_epochs=1,
        eval_every=1, train_examples=0,
    )  # fmt: skip
    config.model = "mlp"
    config.model_kwargs = {"hidden": (16,)}


def get_config(arg=None):
    config = base_config()
    config.update(
        dataset="fashion_mnist", partition="dirichlet", alpha=0.5, num_clients=100,
        clients_per_round=20, client_sampling="poisson", rounds=30, local_epochs=1, batch_size=32,
        client_lr=0.05, eval_every=5, dp_clip=1.0, dp_accountant="rdp", dp_delta=1e-5,
    )  # fmt: skip
    config.model = "cnn"
    config.model_kwargs = {"width": 4, "hidden": 32}
    values = parse_arg(arg)
    epsilon = float(values.pop("epsilon", 4.0))
    if epsilon:
        config.dp_target_epsilon = epsilon
    else:
        config.dp_clip = 0.0
    return apply_arg(config, values, smoke).lock()


def get_sweep():
    """Accuracy against epsilon: each target epsilon, and the same run without DP."""
    return [{"dp_target_epsilon": e} for e in EPSILONS] + [{"dp_clip": 0.0}]
