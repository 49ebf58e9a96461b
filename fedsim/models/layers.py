"""Convolution and Dense layers, each either dense or factorised as ``U Vᵀ`` (Maestro).

Dense form: params ``kernel`` and ``bias`` exactly as ``nn.Conv``/``nn.Dense``, so a model built from
these layers has the same parameter tree as one built from Flax's. Factorised form (Horváth et al.,
'Maestro: Uncovering Low-Rank Structures via Trainable Decomposition', ICML 2024): params ``v``
(``[n, R]``, or ``[kh, kw, c_in, R]`` applied as a convolution), ``u`` (``[m, R]``) and ``bias``, with
``R = min(n, m)`` rank slots, and the kept rank ``keep`` as an int32 variable of the ``ranks``
collection. Slots ``>= keep`` are masked out of the forward pass, so shapes never change while ranks
shrink (``fedsim.compress.lowrank`` holds the maths on these factors). Every layer sows its
multiply-accumulates per example (at its kept rank, in the cheaper of the dense and factorised forms)
into the ``macs`` collection, which ``Model.macs`` sums.

On CPU, XLA's convolution is fast in a standalone jitted step but ~30x slower inside ``lax.scan``
(where the engine's local training runs): XLA:CPU's ``ConvCanonicalization`` pass only rewrites the
entry computation's convolutions into the NHWC/HWIO form its Eigen fast path needs, and JAX's
gradient convolutions are not in that form (``canonical_conv2d``). ``canonical`` writes the backward
pass as canonical convolutions itself. Measured on the 2-core CPU this project tests on (jax 0.10.2,
pfl-research's simple_cnn, batch 10, 5 SGD steps inside ``lax.scan``, interleaved): ``canonical``
450 samples/s, im2col 280, ``lax.conv`` 7-13; a host loop of jitted ``lax.conv`` steps 393; in the
FedAvg round of 50 clients ``canonical`` 249 vs im2col 118. No XLA flag (thunk runtime, XNNPACK,
oneDNN, disabled transpose folding) changed the in-scan figure. So ``auto`` picks ``canonical`` on
CPU and cuDNN convolutions on GPUs. Max-pool by reshape-and-max rather than ``reduce_window`` adds
~5 %.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedsim.compress.lowrank import RANKS

CONV_IMPLS = ("auto", "xla", "canonical", "im2col")
MACS = "macs"  # variable collection the layers sow their multiply-accumulates into
BN_MOMENTUM = 0.9  # flax convention: running = 0.9 running + 0.1 batch


def resolve_conv_impl(impl: str) -> str:
    """``auto`` -> canonical on CPU, XLA's convolution elsewhere (measurements above)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={impl!r}; choose one of {CONV_IMPLS}")
    if impl == "auto":
        return "canonical" if jax.default_backend() == "cpu" else "xla"
    return impl


def _same_or_valid(padding: str, kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit ``(low, high)`` padding of each spatial axis for a stride-1 'SAME'/'VALID' conv."""
    if padding == "VALID":
        return (0, 0), (0, 0)
    return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw))


def _canonical_conv(x, kernel, pads):
    """XLA:CPU's canonical convolution: NHWC input, HWIO kernel, NHWC output, stride 1."""
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def canonical_conv2d(x, kernel, pads):
    """A stride-1 NHWC/HWIO convolution whose backward pass is canonical convolutions as well.

    XLA:CPU runs a convolution on its fast (Eigen) path only in canonical form, and its
    ``ConvCanonicalization`` pass rewrites only the entry computation's convolutions
    (openxla/xla ``xla/service/cpu/conv_canonicalization.cc``: it walks
    ``module->entry_computation()``). JAX's gradient convolutions have transposed dimension numbers,
    so inside ``lax.scan``/``while`` bodies they fall back to XLA's naive loop emitter (~30x slower on
    the simple_cnn). Here both gradients are written as canonical convolutions on explicitly
    transposed operands, the same rewrite that pass does at the top level.
    """
    return _canonical_conv(x, kernel, pads)


def _canonical_fwd(x, kernel, pads):
    return _canonical_conv(x, kernel, pads), (x, kernel)


def _canonical_bwd(pads, residuals, dy):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    # d/dx: the output gradient convolved with the flipped kernel, its in/out features swapped
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
    dx_pads = [(k - 1 - low, k - 1 - high) for k, (low, high) in zip((kh, kw), pads, strict=True)]
    dx = _canonical_conv(dy, flipped, dx_pads)
    # d/dkernel: input channels as the batch, examples as the features, the output gradient as kernel
    dkernel = _canonical_conv(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), pads)
    return dx, dkernel.transpose(1, 2, 0, 3)


canonical_conv2d.defvjp(_canonical_fwd, _canonical_bwd)


def conv2d(x, kernel, padding: str, impl: str):
    """Stride-1 NHWC convolution with an HWIO ``kernel``."""
    kh, kw, fan_in, features = kernel.shape
    dims = ("NHWC", "HWIO", "NHWC")
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=dims)
    if impl == "canonical":
        return canonical_conv2d(x, kernel, _same_or_valid(padding, kh, kw))
    patches = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), (1, 1), padding, dimension_numbers=dims
    )  # feature order: (in_channel, kh, kw)
    return patches @ kernel.transpose(2, 0, 1, 3).reshape(fan_in * kh * kw, features)


def deployed_cost(keep, fan_in: int, fan_out: int):
    """Weights of a layer at kept rank ``keep``: ``min(n m, keep (n + m))`` (Maestro's deployment)."""
    return jnp.minimum(fan_in * fan_out, keep * (fan_in + fan_out))


class _Factorised(nn.Module):
    """Shared body of the factorised layers: ``v``-map, rank mask, ``u`` projection, bias."""

    def factors(self, v_shape, fan_in: int, fan_out: int):
        rank = min(fan_in, fan_out)
        v = self.param("v", nn.initializers.lecun_normal(), v_shape + (rank,))
        u = self.param("u", nn.initializers.lecun_normal(), (fan_out, rank))
        bias = self.param("bias", nn.initializers.zeros_init(), (fan_out,))
        keep = self.variable(RANKS, "keep", lambda: jnp.int32(rank)).value
        return v, u, bias, keep

    def project(self, h, u, bias, keep):
        """``((x V) * mask) Uᵀ + bias``; with ``keep = 0`` the output is the bias."""
        slots = jnp.arange(u.shape[1]) < keep
        return (h * slots) @ u.T + bias


class Conv2D(_Factorised):
    """A stride-1 NHWC convolution, dense (``kernel``, ``bias`` as ``nn.Conv``) or factorised.

    Factorised: ``v`` is a ``kh x kw x c_in -> R`` convolution without bias, ``u`` a 1x1 ``R -> c_out``
    convolution carrying the bias, ``R = min(c_out, kh kw c_in)``.
    """

    features: int
    kernel_size: tuple[int, int]
    padding: str = "SAME"
    impl: str = "auto"
    factorized: bool = False

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        fan_in = kh * kw * x.shape[-1]
        if not self.factorized:
            kernel = self.param(
                "kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features)
            )
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
            y = conv2d(x, kernel, self.padding, self.impl) + bias
            self.sow(MACS, "count", math.prod(y.shape[1:-1]) * fan_in * self.features)
            return y
        v, u, bias, keep = self.factors((kh, kw, x.shape[-1]), fan_in, self.features)
        y = self.project(conv2d(x, v, self.padding, self.impl), u, bias, keep)
        positions = math.prod(y.shape[1:-1])
        self.sow(MACS, "count", positions * deployed_cost(keep, fan_in, self.features))
        return y


class Dense(_Factorised):
    """A Dense layer on the last axis, dense (``kernel``, ``bias`` as ``nn.Dense``) or factorised."""

    features: int
    factorized: bool = False

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        positions = math.prod(x.shape[1:-1])
        if not self.factorized:
            kernel = self.param("kernel", nn.initializers.lecun_normal(), (fan_in, self.features))
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
            self.sow(MACS, "count", positions * fan_in * self.features)
            return x @ kernel + bias
        v, u, bias, keep = self.factors((fan_in,), fan_in, self.features)
        self.sow(MACS, "count", positions * deployed_cost(keep, fan_in, self.features))
        return self.project(x @ v, u, bias, keep)


def max_pool_2x2(x):
    """2x2 max-pool, stride 2, on even spatial sizes (odd sizes are padded with -inf)."""
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))
