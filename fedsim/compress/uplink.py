"""Uplink compressors: pure functions of a client's update tree returning the tree the server decodes
and the int32 bytes of the encoding sent (``fedsim.algorithms.compressed`` puts them on FedAvg).

- ``top_k``: the ``k = ceil(fraction n)`` largest-magnitude coordinates, per leaf or over all leaves
  (Stich, Cordonnier, Jaggi, 'Sparsified SGD with Memory', NeurIPS 2018), each leaf encoded by the
  sparse rule of ``fedsim.compress.encode`` (``min(4n, ceil(n/8) + 4z, 8z)`` for ``z`` kept).
- ``qsgd``: per leaf ``||v|| sign(v_i) l_i / s`` with ``s = 2^bits - 1`` and ``l_i`` the stochastic
  rounding of ``s |v_i| / ||v||`` (Alistarh, Grubic, Li, Tomioka, Vojnovic, 'QSGD: Communication-
  Efficient SGD via Gradient Quantization and Encoding', NeurIPS 2017, one bucket per leaf), sent as
  the fp32 norm plus ``bits + 1`` bits a coordinate (level and sign, packed; no Elias coding).
- ``scaled_sign``: per leaf ``(||v||_1 / n) sign(v)`` (Karimireddy, Rebjock, Stich, Jaggi, 'Error
  Feedback Fixes SignSGD and other Gradient Compression Schemes', ICML 2019), sent as the fp32 scale
  plus one bit a coordinate (``v_i = 0`` goes as ``+``).

Each is positively homogeneous, ``C(a v) = a C(v)`` for ``a > 0`` (QSGD given the same uniform draws).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.compress.encode import FP32_BYTES, masked_leaf_bytes

SCOPES = ("layer", "global")


def top_k_count(fraction, size: int) -> jax.Array:
    """int32 ``k = ceil(fraction size)`` in ``[1, size]``, computed in float32 with a ``1e-3`` slack
    so that float rounding does not add one (``0.3 * 10`` is 3); ``fraction`` may be traced."""
    k = jnp.ceil(jnp.float32(size) * fraction - 1e-3)
    return jnp.clip(k, 1, size).astype(jnp.int32)


def top_k_mask(values: jax.Array, k) -> jax.Array:
    """A bool mask of exactly ``k`` (may be traced) entries of the flat ``values``: the largest
    magnitudes, ties to the lower index."""
    order = jnp.argsort(-jnp.abs(values), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(values.size, dtype=order.dtype))
    return rank < k


def top_k(tree, fraction, scope: str = "layer"):
    """``(sparse tree, bytes)``: ``tree`` with only the top-k coordinates kept, ``k = ceil(fraction
    n)`` of each leaf (``scope='layer'``) or of all leaves together (``'global'``); every leaf is
    sent by the sparse rule of its own kept count."""
    leaves, treedef = jax.tree.flatten(tree)
    if scope == "layer":
        masks = [top_k_mask(leaf.ravel(), top_k_count(fraction, leaf.size)) for leaf in leaves]
    else:
        flat = jnp.concatenate([leaf.ravel() for leaf in leaves])
        masks = jnp.split(top_k_mask(flat, top_k_count(fraction, flat.size)), _offsets(leaves))
    kept, size = [], jnp.int32(0)
    for leaf, mask in zip(leaves, masks, strict=True):
        kept.append(jnp.where(mask.reshape(leaf.shape), leaf, 0))
        size += masked_leaf_bytes(leaf.size, jnp.sum(mask, dtype=jnp.int32))
    return jax.tree.unflatten(treedef, kept), size


def _offsets(leaves) -> list[int]:
    """Where each leaf after the first starts in the concatenation of the flattened ``leaves``."""
    return np.cumsum([leaf.size for leaf in leaves])[:-1].tolist()


def qsgd_leaf(v: jax.Array, levels: int, uniform: jax.Array) -> jax.Array:
    """QSGD of one leaf with ``levels = s`` given the uniform draws ``uniform`` (shaped like ``v``):
    ``l_i = min(floor(s |v_i| / ||v|| + u_i), s)``, i.e. ``floor`` or ``floor + 1`` with the
    probability of the remainder (unbiased)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v)))
    scaled = levels * jnp.abs(v) / jnp.where(norm > 0, norm, 1)
    level = jnp.minimum(jnp.floor(scaled + uniform), levels)
    return norm * jnp.sign(v) * level / levels


def qsgd_bytes(size: int, bits: int) -> int:
    """The fp32 norm plus ``bits + 1`` bits (level, sign) for each of ``size`` coordinates."""
    return FP32_BYTES + math.ceil(size * (bits + 1) / 8)


def qsgd(tree, key, bits: int):
    """``(quantised tree, bytes)``: ``qsgd_leaf`` on every leaf at ``s = 2^bits - 1`` levels, on the
    draws ``uniform(key, [N])`` over all ``N`` coordinates, cut into the leaves in
    ``jax.tree.leaves`` order (one generator, not one per leaf: it compiles in a fraction)."""
    leaves, treedef = jax.tree.flatten(tree)
    draws = jax.random.uniform(key, (sum(leaf.size for leaf in leaves),))
    levels = 2**bits - 1
    quantised = [
        qsgd_leaf(leaf, levels, u.reshape(leaf.shape).astype(leaf.dtype))
        for leaf, u in zip(leaves, jnp.split(draws, _offsets(leaves)), strict=True)
    ]
    size = sum(qsgd_bytes(leaf.size, bits) for leaf in leaves)
    return jax.tree.unflatten(treedef, quantised), jnp.int32(size)


def sign_bytes(size: int) -> int:
    """The fp32 scale plus one bit for each of ``size`` coordinates."""
    return FP32_BYTES + math.ceil(size / 8)


def scaled_sign(tree):
    """``(signs tree, bytes)``: every leaf replaced by ``mean(|v|) * (+1 where v >= 0 else -1)``."""
    signs = jax.tree.map(
        lambda v: jnp.mean(jnp.abs(v)) * jnp.where(v >= 0, 1.0, -1.0).astype(v.dtype), tree
    )
    size = sum(sign_bytes(leaf.size) for leaf in jax.tree.leaves(tree))
    return signs, jnp.int32(size)
