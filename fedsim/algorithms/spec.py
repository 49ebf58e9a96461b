"""What an algorithm declares to the rest of fedsim: its hyper-parameters and how to build it.

An ``AlgorithmSpec`` is the unit a config names (``algorithm='fedprox'`` or an import path
``'my_pkg.algos:SPEC'``). Its ``hparams`` are the defaults of the algorithm's own config section
(``config.<name>``, after big_vision's ``config.model``); ``traceable`` lists the float ones a vmapped
grid may trace, so ``fedsim sweep`` trains cells that differ only in those as one program.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optax

from fedsim.algorithms.base import FederatedAlgorithm
from fedsim.algorithms.optimizers import make_optimizer
from fedsim.errors import ConfigError
from fedsim.models.base import Model


class ClientSetup(NamedTuple):
    """What every algorithm may use besides its own hyper-parameters (from the shared config keys)."""

    model: Model
    num_clients: int
    clients_per_round: int  # K, the clients each round aggregates
    optimizer: optax.GradientTransformation  # the client optimiser at ``lr``
    optimizer_name: str  # its optax name
    lr: Any  # client learning rate (a traced array inside a vmapped grid)
    local_epochs: int
    momentum: float = 0.0  # the optimiser's ``momentum`` argument (0: none)
    reestimate_bn: bool = True  # re-measure kept/deployed BatchNorm statistics (``norm_stats``)
    keep_optimizer_state: bool = False  # keep_client_optimizer_state (specs that allow it)


class AlgorithmSpec(NamedTuple):
    """An algorithm as fedsim's config sees it.

    build(hparams, setup) -> FederatedAlgorithm: ``hparams`` is a dict of this algorithm's section
    (the entries in ``traceable`` may be traced arrays), ``setup`` a ``ClientSetup``.
    hparams: the section's keys and defaults.
    traceable: float hyper-parameters used only in arithmetic (a grid may trace them).
    check(hparams) -> None: raises ``ConfigError`` with one line on a bad value (before any work).
    factorized: trains factorised (``U Vᵀ``) models, i.e. needs ``model_kwargs.factorized=True``.
    needs_validation: reads each client's held-out validation split (``val_fraction > 0``).
    keeps_optimizer_state: its clients can keep their optimiser state across rounds
    (``keep_client_optimizer_state``, ``ClientSetup.keep_optimizer_state``).
    """

    name: str
    build: Callable[[dict, ClientSetup], FederatedAlgorithm]
    hparams: Mapping[str, Any] = {}
    traceable: tuple[str, ...] = ()
    check: Callable[[dict], None] | None = None
    factorized: bool = False
    needs_validation: bool = False
    keeps_optimizer_state: bool = False


LR_SCHEDULES = ("constant", "step")


def lr_schedule(name: str, lr, total_steps: int):
    """The client learning rate: ``lr`` (``constant``) or, ``step``, an optax schedule of the
    optimiser's step count: ``lr`` x0.1 from 50 % and again from 75 % of ``total_steps`` (the
    official Maestro CIFAR schedule, Horváth et al., ICML 2024)."""
    if name == "constant":
        return lr
    if total_steps < 4:  # the two drops would fall on one step (or on the first)
        raise ConfigError(
            f"client_lr_schedule='step' over {total_steps} local steps: it needs at least 4 "
            "(more rounds or local_epochs, or client_lr_schedule='constant')"
        )
    return optax.piecewise_constant_schedule(lr, {total_steps // 2: 0.1, 3 * total_steps // 4: 0.1})


def client_optimizer(name: str, lr, momentum: float) -> optax.GradientTransformation:
    """The client optimiser ``optax.<name>(lr)``; ``momentum > 0`` is passed as optax's ``momentum``."""
    extra = {"momentum": momentum} if momentum else {}
    return make_optimizer("client_optimizer", name, lr, **extra)


def server_optimizer(hparams: dict) -> optax.GradientTransformation:
    """``optax.<server_optimizer>(server_lr)`` from a section with those two keys."""
    return make_optimizer("server_optimizer", hparams["server_optimizer"], hparams["server_lr"])


SERVER_SGD = {
    "server_optimizer": "sgd",  # optax name of the server optimiser on the pseudo-gradient -mean(delta)
    "server_lr": 1.0,  # server learning rate (1 with SGD: the plain average)
}


RULES = {
    ">0": ("> 0", lambda v: v > 0),
    ">=0": (">= 0", lambda v: v >= 0),
    "[0,1)": ("in [0, 1)", lambda v: 0 <= v < 1),
    "[0,0.5)": ("in [0, 0.5)", lambda v: 0 <= v < 0.5),
    "[0,1]": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "(0,1]": ("in (0, 1]", lambda v: 0 < v <= 1),
}


def check_ranges(hparams: dict, name: str, **rules: str) -> None:
    """One-line ``ConfigError`` unless each ``hparams[key]`` satisfies its rule (a key of ``RULES``);
    ``name`` is the section, for the message."""
    for key, rule in rules.items():
        wording, holds = RULES[rule]
        if not holds(hparams[key]):
            raise ConfigError(f"{name}.{key}={hparams[key]} must be {wording}")


def check_choice(hparams: dict, name: str, key: str, accepted: tuple[str, ...]) -> None:
    """One-line ``ConfigError`` unless ``hparams[key]`` is one of ``accepted``."""
    if hparams[key] not in accepted:
        raise ConfigError(f"{name}.{key}={hparams[key]!r}; choose one of: {', '.join(accepted)}")
