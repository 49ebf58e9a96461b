"""The FedAvg CNN of McMahan et al. 2017, 'Communication-Efficient Learning of Deep Networks from
Decentralized Data': conv5x5-32, max-pool 2, conv5x5-64, max-pool 2, fc-512, fc-classes."""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, factorized_model, from_flax
from fedsim.models.layers import Conv2D, Dense, max_pool_2x2


class FedAvgCNN(nn.Module):
    num_classes: int
    width: int = 32
    hidden: int = 512
    conv_impl: str = "auto"
    factorized: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        low = self.factorized
        for features in (self.width, 2 * self.width):
            x = Conv2D(features, (5, 5), impl=self.conv_impl, factorized=low)(x)
            x = max_pool_2x2(nn.relu(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(Dense(self.hidden, factorized=low)(x))
        self.sow(REPRESENTATION, "z", x)
        return Dense(self.num_classes, factorized=low)(x)


def make(
    num_classes: int,
    width: int = 32,
    hidden: int = 512,
    conv_impl: str = "auto",
    factorized: bool = False,
) -> Model:
    """FedAvg CNN; ``width`` and ``hidden`` shrink it for tests; ``conv_impl`` see ``layers``;
    ``factorized`` makes every layer ``U Vᵀ`` (Maestro), SVD-initialised from the dense init."""
    build = lambda low: FedAvgCNN(num_classes, width, hidden, conv_impl, low)
    dense = from_flax("cnn", build(False))
    return factorized_model(dense, from_flax("cnn", build(True))) if factorized else dense
