"""Exact byte counts of what a client stores or transmits (the rule in CONTRACT.md)."""

import jax
import numpy as np

FP32_BYTES = 4


def dense_bytes(tree, bytes_per_value: int = FP32_BYTES) -> int:
    """Bytes of every leaf sent dense."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree))) * bytes_per_value
