"""The FedAvg CNN of McMahan et al. 2017, 'Communication-Efficient Learning of Deep Networks from
Decentralized Data': conv5x5-32, max-pool 2, conv5x5-64, max-pool 2, fc-512, fc-classes."""

import flax.linen as nn

from fedsim.models.base import Model, from_flax
from fedsim.models.layers import Conv2D, max_pool_2x2


class FedAvgCNN(nn.Module):
    num_classes: int
    width: int = 32
    hidden: int = 512
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = max_pool_2x2(nn.relu(Conv2D(self.width, (5, 5), impl=self.conv_impl)(x)))
        x = max_pool_2x2(nn.relu(Conv2D(2 * self.width, (5, 5), impl=self.conv_impl)(x)))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


def make(num_classes: int, width: int = 32, hidden: int = 512, conv_impl: str = "auto") -> Model:
    """FedAvg CNN; ``width`` and ``hidden`` shrink it for tests; ``conv_impl`` see ``layers``."""
    module = FedAvgCNN(num_classes=num_classes, width=width, hidden=hidden, conv_impl=conv_impl)
    return from_flax("cnn", module)
