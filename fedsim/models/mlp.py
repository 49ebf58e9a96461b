"""Multi-layer perceptron on flattened inputs."""

from collections.abc import Sequence

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, factorized_model, from_flax
from fedsim.models.layers import Dense


class MLP(nn.Module):
    hidden: Sequence[int]
    num_classes: int
    factorized: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(Dense(width, factorized=self.factorized)(x))
        self.sow(REPRESENTATION, "z", x)
        return Dense(self.num_classes, factorized=self.factorized)(x)


def make(num_classes: int, hidden: Sequence[int] = (200, 200), factorized: bool = False) -> Model:
    """The 2x200 MLP of McMahan et al. 2017 (configurable widths); ``factorized``: Maestro layers."""
    build = lambda low: MLP(hidden=tuple(hidden), num_classes=num_classes, factorized=low)
    dense = from_flax("mlp", build(False))
    return factorized_model(dense, from_flax("mlp", build(True))) if factorized else dense
