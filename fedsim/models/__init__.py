"""Models chosen by name or by import path: ``get_model(name, num_classes, **kwargs)``.

A registered name imports ``fedsim.models.<module>:make``; an import path (``my_pkg.nets:make`` or
``path/to/nets.py:MyNet``) names either such a ``make(num_classes, **kwargs) -> Model`` function or a
Flax module class taking ``num_classes`` (wrapped with ``fedsim.models.base.from_flax``).
"""

import flax.linen as nn

from fedsim import plugins
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars, count_params, from_flax

BUILTIN = {
    "mlp": "fedsim.models.mlp:make",
    "cnn": "fedsim.models.cnn:make",
    "lenet5": "fedsim.models.lenet:make",
    "char_lstm": "fedsim.models.char_lstm:make",
    "bn_cnn": "fedsim.models.bn_cnn:make",
    "simple_cnn": "fedsim.models.simple_cnn:make",
    "resnet18": "fedsim.models.resnet:make",
    "vgg11": "fedsim.models.vgg:make",
    "transformer": "fedsim.models.transformer:make",
}
MODELS = tuple(BUILTIN)


def get_model(name: str, num_classes: int, **kwargs) -> Model:
    """Builds a registered model, or the one at import path ``name``, for ``num_classes`` outputs."""
    if not plugins.is_path(name) and name not in BUILTIN:
        raise ConfigError(
            f"model={name!r} is not registered; choose one of: {', '.join(MODELS)}, or give an "
            "import path 'module:attr' / 'file.py:attr'"
        )
    factory = plugins.load(BUILTIN.get(name, name), "model")
    if isinstance(factory, type) and issubclass(factory, nn.Module):
        return from_flax(name, factory(num_classes=num_classes, **kwargs))
    model = factory(num_classes, **kwargs)
    if not isinstance(model, Model):
        raise ConfigError(f"model={name!r} built a {type(model).__name__}, not a fedsim Model")
    return model


__all__ = ["MODELS", "Model", "ModelVars", "count_params", "get_model"]
