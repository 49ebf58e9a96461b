"""Multi-layer perceptron on flattened inputs."""

from collections.abc import Sequence

import flax.linen as nn

from fedsim.models.base import Model, from_flax


class MLP(nn.Module):
    hidden: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def make(num_classes: int, hidden: Sequence[int] = (200, 200)) -> Model:
    """The 2x200 MLP of McMahan et al. 2017 (configurable widths)."""
    return from_flax("mlp", MLP(hidden=tuple(hidden), num_classes=num_classes))
