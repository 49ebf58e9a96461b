"""Models chosen by name: ``get_model(name, num_classes, **kwargs)`` imports ``fedsim.models.<name>``."""

import importlib

from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars, count_params

MODELS = ("mlp", "cnn", "lenet5", "char_lstm", "bn_cnn", "resnet18", "vgg11", "transformer")
_MODULES = {
    "mlp": "mlp",
    "cnn": "cnn",
    "lenet5": "lenet",
    "char_lstm": "char_lstm",
    "bn_cnn": "bn_cnn",
    "resnet18": "resnet",
    "vgg11": "vgg",
    "transformer": "transformer",
}


def get_model(name: str, num_classes: int, **kwargs) -> Model:
    """Builds a registered model by name."""
    if name not in _MODULES:
        raise ConfigError(f"model={name!r} is not registered; choose one of: {', '.join(MODELS)}")
    return importlib.import_module(f"fedsim.models.{_MODULES[name]}").make(num_classes, **kwargs)


__all__ = ["MODELS", "Model", "ModelVars", "count_params", "get_model"]
