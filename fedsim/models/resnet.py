"""CIFAR ResNet-18 (He et al. 2016, 'Deep Residual Learning for Image Recognition'): a 3x3 stem
conv, no max-pool, 4 stages of 2 BasicBlocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), a
1x1 conv + norm projection shortcut where the shape changes, global average pool, fc-classes.
11,173,962 parameters on 32x32x3 inputs with 10 classes (convolutions have no bias)."""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, from_flax
from fedsim.models.bn_cnn import check_norm, normalise


class BasicBlock(nn.Module):
    features: int
    stride: int
    norm: str
    groups: int

    @nn.compact
    def __call__(self, x, train: bool, mask):
        strides = (self.stride, self.stride)
        y = nn.Conv(self.features, (3, 3), strides, padding=1, use_bias=False)(x)
        y = nn.relu(normalise(y, self.norm, self.groups, train, mask))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
        y = normalise(y, self.norm, self.groups, train, mask)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), strides, use_bias=False)(x)
            x = normalise(x, self.norm, self.groups, train, mask)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    num_classes: int
    width: int = 64
    norm: str = "batch"
    groups: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(normalise(x, self.norm, self.groups, train, mask))
        for stage in range(4):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * 2**stage, stride, self.norm, self.groups)(
                    x, train, mask
                )
        x = x.mean(axis=(1, 2))
        self.sow(REPRESENTATION, "z", x)
        return nn.Dense(self.num_classes)(x)


def make(num_classes: int, width: int = 64, norm: str = "batch", groups: int = 2) -> Model:
    """ResNet-18 for 32x32 images; ``norm`` "batch" or "group" (``groups`` groups); ``width``
    (stem channels) shrinks it."""
    return from_flax("resnet18", ResNet18(num_classes, width, check_norm(norm), groups))
