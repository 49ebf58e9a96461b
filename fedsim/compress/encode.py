"""Exact byte counts of what a client stores or transmits (the rule in docs/metrics.md).

A dense leaf costs 4 bytes per value. A masked leaf of ``n`` entries with ``z`` kept costs
``min(4n, ceil(n/8) + 4z, 8z)``: dense fp32, a bitmap plus fp32 values, or int32 index + fp32 value
pairs, whichever is smallest (the bitmap wins above density 1/32).
"""

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.compress.masks import norm_flags, prunable

FP32_BYTES = 4


def dense_bytes(tree, bytes_per_value: int = FP32_BYTES) -> int:
    """Bytes of every leaf sent dense."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree))) * bytes_per_value


def masked_leaf_bytes(size: int, kept):
    """``min(4n, ceil(n/8) + 4z, 8z)`` for ``n = size`` entries of which ``kept`` are nonzero."""
    kept = jnp.asarray(kept, jnp.int32)
    dense = jnp.int32(FP32_BYTES * size)
    bitmap = (size + 7) // 8 + FP32_BYTES * kept
    return jnp.minimum(dense, jnp.minimum(bitmap, 2 * FP32_BYTES * kept))


def masked_bytes(params, mask, values_only: bool = False, skip_norm: bool = False) -> jax.Array:
    """int32 bytes of ``params`` under ``mask``: prunable leaves encoded, every other leaf dense.

    ``values_only`` counts 4 bytes per kept value and no index overhead (the FedLTN claim's variant);
    ``skip_norm`` leaves out normalisation leaves (personal ones that never travel).
    """
    total = jnp.int32(0)
    flags = jax.tree.leaves(prunable(params))
    norm = jax.tree.leaves(norm_flags(params))
    leaves = zip(norm, jax.tree.leaves(params), jax.tree.leaves(mask), flags, strict=True)
    for is_norm, p, m, flag in leaves:
        if skip_norm and is_norm:
            continue
        if not flag:
            total += FP32_BYTES * np.size(p)
            continue
        kept = jnp.sum(m, dtype=jnp.int32)
        total += FP32_BYTES * kept if values_only else masked_leaf_bytes(np.size(p), kept)
    return total
