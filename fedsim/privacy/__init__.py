"""User-level differential privacy: DP-FedAvg around an algorithm, accounted with ``dp-accounting``.

``from_config`` turns the ``dp_*`` config keys into the settings plus the ``Mechanism`` the driver asks
for epsilon after every evaluated round; ``dp_clip=0`` (the default) means no DP. ``check_wrappable``
tells from the algorithm itself whether ``wrap`` can privatise it.
"""

from typing import NamedTuple

from fedsim.algorithms.base import FederatedAlgorithm
from fedsim.algorithms.task import SAMPLING
from fedsim.errors import ConfigError, check_choices
from fedsim.privacy.accounting import ACCOUNTANTS, Mechanism
from fedsim.privacy.dp_fedavg import (
    ClippedUpdate,
    DPServerState,
    DPSettings,
    check_wrappable,
    dp_fedavg,
)

MASK_MODES = ("client", "fixed")


class Privacy(NamedTuple):
    """A run's DP mechanism: its settings (noise resolved) and its accountant."""

    settings: DPSettings
    mechanism: Mechanism

    def epsilon(self, rounds: int) -> float:
        return self.mechanism.epsilon(self.settings.noise_multiplier, rounds)


def validate(config) -> None:
    """Checks the ``dp_*`` keys and ``client_sampling`` (ConfigError on the first bad one); whether DP
    can wrap the algorithm is ``check_wrappable``'s, once the algorithm is built."""
    check_choices(config, {"client_sampling": SAMPLING})
    for key in ("dp_clip", "dp_noise", "dp_target_epsilon", "dp_count_noise", "dp_clip_lr"):
        if config[key] < 0:
            raise ConfigError(f"{key}={config[key]} must be >= 0")
    if not config.dp_clip:
        return
    check_choices(config, {"dp_mask": MASK_MODES, "dp_accountant": ACCOUNTANTS})
    if not 0 <= config.dp_target_quantile < 1:
        raise ConfigError(
            f"dp_target_quantile={config.dp_target_quantile} must lie in [0, 1) "
            "(0 keeps the clip norm fixed)"
        )
    if config.client_sampling == "fixed" and config.dp_accountant == "pld":
        raise ConfigError(
            "dp_accountant='pld' with client_sampling='fixed': dp-accounting's PLD accountant "
            "has no fixed-size sampling; use dp_accountant='rdp' or client_sampling='poisson'"
        )
    if not 0 < config.dp_delta < 1:
        raise ConfigError(f"dp_delta={config.dp_delta} must lie in (0, 1)")


def from_config(config, clients_per_round: int) -> Privacy | None:
    """The run's ``Privacy`` (``dp_target_epsilon > 0`` calibrates the noise), or None without DP."""
    if not config.dp_clip:
        return None
    mechanism = Mechanism(
        config.num_clients,
        clients_per_round,
        config.client_sampling,
        config.dp_accountant,
        config.dp_delta,
    )
    noise = config.dp_noise
    if config.dp_target_epsilon:
        noise = mechanism.noise_for_epsilon(config.dp_target_epsilon, config.rounds)
    adaptive = config.dp_target_quantile > 0
    count_noise = (config.dp_count_noise or clients_per_round / 20) if adaptive else 0.0
    if adaptive and noise > 0 and not 2 * count_noise > noise:
        raise ConfigError(
            f"dp_count_noise={count_noise:g} with noise multiplier {noise:g}: adaptive clipping "
            "needs 2 * dp_count_noise > the noise multiplier (Andrew et al. 2021)"
        )
    settings = DPSettings(
        clip=config.dp_clip,
        noise_multiplier=noise,
        expected_clients=clients_per_round,
        fixed_mask=config.dp_mask == "fixed",
        target_quantile=config.dp_target_quantile if adaptive else None,
        clip_lr=config.dp_clip_lr,
        count_noise=count_noise,
    )
    return Privacy(settings, mechanism)


def wrap(algorithm: FederatedAlgorithm, privacy: Privacy | None, seed: int) -> FederatedAlgorithm:
    """``algorithm`` under DP-FedAvg, or unchanged when ``privacy`` is None."""
    return algorithm if privacy is None else dp_fedavg(algorithm, privacy.settings, seed)


__all__ = [
    "ClippedUpdate",
    "DPServerState",
    "DPSettings",
    "Mechanism",
    "Privacy",
    "check_wrappable",
    "dp_fedavg",
    "from_config",
    "validate",
    "wrap",
]
