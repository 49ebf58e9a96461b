"""Server optimisers for FedAvg: FedAvgM (Hsu et al. 2019, 'Measuring the Effects of Non-Identical
Data Distribution for Federated Visual Classification') and FedAdagrad, FedAdam, FedYogi (Reddi et al.,
ICLR 2021, 'Adaptive Federated Optimization').

The adaptive ones follow the paper exactly, which ``optax.adam`` does not: no bias correction, the
second moment starts at ``tau**2``, and ``tau`` is added outside the square root.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import fedavg as fedavg_lib
from fedsim.algorithms.spec import AlgorithmSpec, check_ranges
from fedsim.models.base import Model

SECOND_MOMENTS = ("adagrad", "adam", "yogi")


class FedOptState(NamedTuple):
    m: optax.Updates
    v: optax.Updates


def fedopt_transform(
    second_moment: str, learning_rate: float, b1: float = 0.9, b2: float = 0.99, tau: float = 1e-3
) -> optax.GradientTransformation:
    """The FedOpt server step on the pseudo-gradient ``g = -Delta`` (Reddi et al. 2021, Alg. 2).

    ``m = b1 m + (1 - b1) Delta``; ``v`` by ``second_moment``: adagrad ``v + Delta^2``, adam
    ``b2 v + (1 - b2) Delta^2``, yogi ``v - (1 - b2) Delta^2 sign(v - Delta^2)``; update
    ``lr m / (sqrt(v) + tau)``.

    >>> transform = fedopt_transform("adam", learning_rate=0.01)
    >>> isinstance(transform, optax.GradientTransformation)
    True
    """
    if second_moment not in SECOND_MOMENTS:
        raise ValueError(f"second_moment={second_moment!r}; choose one of {SECOND_MOMENTS}")

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return FedOptState(m=zeros, v=jax.tree.map(lambda p: jnp.full_like(p, tau**2), params))

    def second(v, d2):
        if second_moment == "adagrad":
            return v + d2
        if second_moment == "adam":
            return b2 * v + (1 - b2) * d2
        return v - (1 - b2) * d2 * jnp.sign(v - d2)

    def update(grads, state, params=None):
        delta = jax.tree.map(jnp.negative, grads)
        m = jax.tree.map(lambda m, d: b1 * m + (1 - b1) * d, state.m, delta)
        v = jax.tree.map(lambda v, d: second(v, d * d), state.v, delta)
        updates = jax.tree.map(lambda m, v: learning_rate * m / (jnp.sqrt(v) + tau), m, v)
        return updates, FedOptState(m, v)

    return optax.GradientTransformation(init, update)


def fedavgm(model: Model, client_optimizer, server_lr: float = 1.0, momentum: float = 0.9):
    """FedAvg with server momentum: ``v = beta v + g; w = w - lr v`` (``optax.sgd`` with momentum)."""
    server = optax.sgd(server_lr, momentum=momentum)
    return fedavg_lib.fedavg(model, client_optimizer, server, name="fedavgm")


def fedadam(model: Model, client_optimizer, server_lr=1e-2, b1=0.9, b2=0.99, tau=1e-3):
    """FedAdam (Reddi et al. 2021).

    >>> import optax
    >>> from fedsim.models import get_model
    >>> fedadam(get_model("mlp", 10), optax.sgd(0.0316)).name
    'fedadam'
    """
    server = fedopt_transform("adam", server_lr, b1, b2, tau)
    return fedavg_lib.fedavg(model, client_optimizer, server, name="fedadam")


def fedyogi(model: Model, client_optimizer, server_lr=1e-2, b1=0.9, b2=0.99, tau=1e-3):
    """FedYogi (Reddi et al. 2021)."""
    server = fedopt_transform("yogi", server_lr, b1, b2, tau)
    return fedavg_lib.fedavg(model, client_optimizer, server, name="fedyogi")


def fedadagrad(model: Model, client_optimizer, server_lr=1e-2, b1=0.0, tau=1e-3):
    """FedAdagrad (Reddi et al. 2021); ``b1 = 0`` by default, as in Flower."""
    server = fedopt_transform("adagrad", server_lr, b1, 0.0, tau)
    return fedavg_lib.fedavg(model, client_optimizer, server, name="fedadagrad")


FEDAVGM = AlgorithmSpec(
    "fedavgm",
    lambda hp, setup: fedavgm(setup.model, setup.optimizer, hp["server_lr"], hp["momentum"]),
    hparams={
        "server_lr": 1.0,  # with momentum beta the server moves lr / (1 - beta) x the mean update
        "momentum": 0.9,  # server momentum beta
    },
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "fedavgm", server_lr=">0", momentum="[0,1)"),
)


def _adaptive(name: str, factory, server_lr: float = 1e-2):
    """The spec of a FedOpt algorithm with Reddi et al.'s server learning rate ``1e-2``."""
    build = lambda hp, setup: factory(
        setup.model, setup.optimizer, hp["server_lr"], hp["beta1"], hp["beta2"], hp["tau"]
    )
    check = lambda hp: check_ranges(
        hp, name, server_lr=">0", beta1="[0,1)", beta2="[0,1)", tau=">0"
    )
    hparams = {
        "server_lr": server_lr,  # server learning rate (Reddi et al.: 1e-2)
        "beta1": 0.9,  # first-moment decay
        "beta2": 0.99,  # second-moment decay
        "tau": 1e-3,  # adaptivity: added outside the square root; v starts at tau^2
    }
    return AlgorithmSpec(name, build, hparams, ("server_lr", "beta1", "beta2", "tau"), check)


FEDADAM = _adaptive("fedadam", fedadam)
FEDYOGI = _adaptive("fedyogi", fedyogi)
FEDADAGRAD = AlgorithmSpec(
    "fedadagrad",
    lambda hp, setup: fedadagrad(setup.model, setup.optimizer, hp["server_lr"], 0.0, hp["tau"]),
    hparams={
        "server_lr": 1e-2,  # server learning rate (Reddi et al.: 1e-2)
        "tau": 1e-3,  # adaptivity: added outside the square root; v starts at tau^2
    },
    traceable=("server_lr", "tau"),
    check=lambda hp: check_ranges(hp, "fedadagrad", server_lr=">0", tau=">0"),
)
