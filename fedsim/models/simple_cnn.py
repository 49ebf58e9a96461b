"""pfl-research's ``simple_cnn`` (Apple, ``benchmarks/model/pytorch/cnn.py`` and ``tf2/cnn.py`` of
github.com/apple/pfl-research), the model of its CIFAR-10 benchmark: conv3x3-32, conv3x3-64 (both
VALID), max-pool 2, dropout 0.25, fc-128, dropout 0.5, fc-classes. 1,626,442 parameters on 32x32x3."""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, from_flax
from fedsim.models.layers import Conv2D, max_pool_2x2


class SimpleCNN(nn.Module):
    num_classes: int
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(Conv2D(32, (3, 3), "VALID", self.conv_impl)(x))
        x = max_pool_2x2(nn.relu(Conv2D(64, (3, 3), "VALID", self.conv_impl)(x)))
        x = nn.Dropout(0.25, deterministic=not train)(x)
        x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
        self.sow(REPRESENTATION, "z", x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def make(num_classes: int, conv_impl: str = "auto") -> Model:
    """pfl-research's CIFAR-10 benchmark CNN; ``conv_impl`` see ``fedsim.models.layers``."""
    return from_flax("simple_cnn", SimpleCNN(num_classes=num_classes, conv_impl=conv_impl))
