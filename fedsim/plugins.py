"""Objects named by import path, so a config can use a model, algorithm or dataset defined anywhere.

A path is ``package.module:attr`` (imported with ``importlib``) or ``path/to/file.py:attr`` (the
file is executed as a module). The built-in registries use the same paths, so a user's object and a
built-in one go through the same door.
"""

import importlib
import importlib.util
import re
import sys
from pathlib import Path

from fedsim.errors import ConfigError


def is_path(name: str) -> bool:
    """Whether ``name`` is an import path (``module:attr`` or ``file.py:attr``), not a registered name."""
    return ":" in name


def load(path: str, key: str):
    """The object at import path ``path``; ``key`` is the config key, for the one-line error."""
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{key}={path!r}: an import path is 'package.module:attr' or 'file.py:attr'"
        )
    module = _module(module_name, key, path)
    if not hasattr(module, attr):
        raise ConfigError(f"{key}={path!r}: {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _module(module_name: str, key: str, path: str):
    if module_name.endswith(".py"):
        return _file_module(Path(module_name), key, path)
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}={path!r}: cannot import {module_name!r} ({err})") from None


def _file_module(file: Path, key: str, path: str):
    """A Python file run as a module once per process (its name derived from its resolved path)."""
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: file {str(file)!r} does not exist")
    name = "fedsim_plugin" + re.sub(r"\W", "_", str(file.resolve().with_suffix("")))
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise ConfigError(f"{key}={path!r}: running {str(file)!r} failed: {err}") from None
    return sys.modules[name]
