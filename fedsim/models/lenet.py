"""LeNet-5 (LeCun et al. 1998, 'Gradient-based learning applied to document recognition'):
conv5x5-6, pool, conv5x5-16, pool, fc-120, fc-84, fc-classes; the first convolution pads so
28x28 inputs see the classic 32x32 geometry."""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, from_flax
from fedsim.models.layers import Conv2D, max_pool_2x2


class LeNet5(nn.Module):
    num_classes: int
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = max_pool_2x2(nn.relu(Conv2D(6, (5, 5), "SAME", self.conv_impl)(x)))
        x = max_pool_2x2(nn.relu(Conv2D(16, (5, 5), "VALID", self.conv_impl)(x)))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        self.sow(REPRESENTATION, "z", x)
        return nn.Dense(self.num_classes)(x)


def make(num_classes: int, conv_impl: str = "auto") -> Model:
    """LeNet-5 for small grey-scale images."""
    return from_flax("lenet5", LeNet5(num_classes=num_classes, conv_impl=conv_impl))
