"""VGG-11 (Simonyan & Zisserman 2015, 'Very Deep Convolutional Networks for Large-Scale Image
Recognition') in its common CIFAR form: configuration A (64, M, 128, M, 256, 256, M, 512, 512, M,
512, 512, M) of conv3x3 + norm + relu, then a single fc-classes on the 1x1x512 features.
9,231,114 parameters on 32x32x3 inputs with 10 classes (convolutions keep their bias)."""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, from_flax
from fedsim.models.bn_cnn import check_norm, normalise
from fedsim.models.layers import Conv2D, max_pool_2x2

CFG = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channels in units of ``width``


class VGG11(nn.Module):
    num_classes: int
    width: int = 64
    norm: str = "batch"
    groups: int = 2
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        for item in CFG:
            if item == "M":
                x = max_pool_2x2(x)
            else:
                x = Conv2D(item * self.width, (3, 3), impl=self.conv_impl)(x)
                x = nn.relu(normalise(x, self.norm, self.groups, train, mask))
        x = x.reshape((x.shape[0], -1))
        self.sow(REPRESENTATION, "z", x)
        return nn.Dense(self.num_classes)(x)


def make(
    num_classes: int,
    width: int = 64,
    norm: str = "batch",
    groups: int = 2,
    conv_impl: str = "auto",
) -> Model:
    """VGG-11 for 32x32 images; ``norm`` "batch" or "group" (``groups`` groups); ``width`` (first
    conv's channels) shrinks it."""
    return from_flax("vgg11", VGG11(num_classes, width, check_norm(norm), groups, conv_impl))
