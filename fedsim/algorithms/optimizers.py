"""Optimisers chosen by optax name (``getattr(optax, name)``), with a clear error for bad names."""

import optax

from fedsim.errors import ConfigError


def make_optimizer(key: str, name: str, learning_rate: float, **kwargs):
    """``optax.<name>(learning_rate, **kwargs)``; ``key`` is the config key, for the error message."""
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ConfigError(
            f"{key}={name!r} is not an optax optimiser; use a name like 'sgd', 'adam', 'momentum'"
        )
    try:
        transform = factory(learning_rate=learning_rate, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{key}={name!r} cannot be built with a learning rate: {err}") from None
    if not isinstance(transform, optax.GradientTransformation):
        raise ConfigError(f"{key}={name!r} is not an optax optimiser (no GradientTransformation)")
    return transform
