"""A small normalised CNN, the scaled FedLTN-style model (Mugunthan et al. 2022, 'FedLTN: Federated
Learning for Sparse and Personalized Lottery Ticket Networks'): conv3x3-16, norm, relu, pool,
conv3x3-32, norm, relu, pool, fc-46, norm, relu, fc-classes. 77,632 parameters on 28x28x1 inputs
with 10 classes (100,000 on 32x32x3).

Also home to the normalisation shared by the normalised models (``resnet``, ``vgg``): BatchNorm
(flax momentum 0.9, i.e. PyTorch's 0.1, and epsilon 1e-5) whose batch statistics skip the padded
rows of a batch, or GroupNorm (Wu & He 2018), which suits non-IID federated training (Hsieh et al.
2020) and is used there with 2 groups (Reddi et al. 2021). Normalisation modules keep flax's auto
names (``BatchNorm_0``, ``GroupNorm_0``) since personal normalisation leaves are found by a path
key containing "Norm".
"""

import flax.linen as nn

from fedsim.models.base import REPRESENTATION, Model, factorized_model, from_flax
from fedsim.models.layers import BN_MOMENTUM, Conv2D, Dense, max_pool_2x2

NORMS = ("batch", "group")


def check_norm(norm: str) -> str:
    """Returns ``norm`` if it is one of ``NORMS``, else raises ValueError."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; choose one of {NORMS}")
    return norm


def normalise(x, norm: str, groups: int, train: bool, mask=None):
    """BatchNorm or GroupNorm over the last axis; call inside a compact module.

    ``mask`` (bool ``[B]``, True on real examples) keeps padded rows out of the batch statistics.
    """
    if norm == "group":
        return nn.GroupNorm(num_groups=groups)(x)
    if mask is not None:
        mask = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    bn = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5)
    return bn(x, mask=mask)


class BNCNN(nn.Module):
    num_classes: int
    width: int = 16
    hidden: int = 46
    norm: str = "batch"
    groups: int = 2
    conv_impl: str = "auto"
    factorized: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        low = self.factorized
        for features in (self.width, 2 * self.width):
            x = Conv2D(features, (3, 3), impl=self.conv_impl, factorized=low)(x)
            x = max_pool_2x2(nn.relu(normalise(x, self.norm, self.groups, train, mask)))
        x = x.reshape((x.shape[0], -1))
        x = Dense(self.hidden, factorized=low)(x)
        x = nn.relu(normalise(x, self.norm, self.groups, train, mask))
        self.sow(REPRESENTATION, "z", x)
        return Dense(self.num_classes, factorized=low)(x)


def make(
    num_classes: int,
    width: int = 16,
    hidden: int = 46,
    norm: str = "batch",
    groups: int = 2,
    conv_impl: str = "auto",
    factorized: bool = False,
) -> Model:
    """Small BN CNN; ``norm`` "batch" or "group" (``groups`` groups); ``width``/``hidden`` shrink it;
    ``factorized`` makes every Conv/Dense ``U Vᵀ`` (Maestro), SVD-initialised from the dense init."""
    build = lambda low: BNCNN(num_classes, width, hidden, check_norm(norm), groups, conv_impl, low)
    dense = from_flax("bn_cnn", build(False))
    return factorized_model(dense, from_flax("bn_cnn", build(True))) if factorized else dense
