"""The one error type users see for bad input: the CLI prints its message and exits 2."""


class ConfigError(ValueError):
    """Bad user input (config value, data, argument).

    The message is one line that names the bad value and says what would be accepted, e.g.
    ``alpha=-1.0 must be > 0``.
    """


def check_choices(config, choices: dict[str, tuple[str, ...]]) -> None:
    """Raises ConfigError unless every ``config[key]`` is one of ``choices[key]``."""
    for key, accepted in choices.items():
        if config[key] not in accepted:
            raise ConfigError(f"{key}={config[key]!r}; choose one of: {', '.join(accepted)}")
