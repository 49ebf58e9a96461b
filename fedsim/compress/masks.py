"""Pruning masks as pytrees with the params' tree structure (optax.masked style).

A mask holds a bool array shaped like the leaf for every prunable leaf (a Conv/Dense ``kernel``) and a
scalar ``True`` for every other leaf (biases, normalisation), so ``apply_mask`` is one ``tree.map`` and
stacked ``[C, ...]`` masks stay small. Normalisation leaves are found by module name (a path key with
"Norm" in it, flax's ``BatchNorm_0``/``GroupNorm_0``), never by the substring "weight" (which also
catches BatchNorm's scale, the pitfall of the LotteryFL and Sub-FedAvg code).
"""

import jax
import jax.numpy as jnp


def _key_name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def is_norm_path(path) -> bool:
    """True for leaves inside a normalisation module (BatchNorm, GroupNorm, LayerNorm)."""
    return any("Norm" in _key_name(entry) for entry in path)


def is_prunable_path(path, leaf) -> bool:
    """Conv and Dense kernels (first and last layer included); never biases or normalisation."""
    return _key_name(path[-1]) == "kernel" and jnp.ndim(leaf) >= 2 and not is_norm_path(path)


def prunable(params):
    """A tree of Python bools: which leaves of ``params`` are prunable."""
    return jax.tree_util.tree_map_with_path(is_prunable_path, params)


def norm_flags(params):
    """A tree of Python bools: which leaves of ``params`` belong to a normalisation module."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_norm_path(path), params)


def init_mask(params):
    """Everything kept: ones for prunable leaves, scalar True elsewhere."""
    return jax.tree.map(
        lambda flag, p: jnp.ones(jnp.shape(p), bool) if flag else jnp.ones((), bool),
        prunable(params),
        params,
    )


def apply_mask(params, mask):
    """Zeroes pruned coordinates (exact zeros, also of NaN/Inf values)."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def prunable_leaves(tree, params) -> list:
    """The leaves of ``tree`` (a mask or a params-shaped tree) at the prunable positions of ``params``."""
    flags = jax.tree.leaves(prunable(params))
    return [leaf for leaf, flag in zip(jax.tree.leaves(tree), flags, strict=True) if flag]


def kept_and_total(mask, params) -> tuple[jax.Array, int]:
    """``(kept, total)`` prunable coordinates: kept as an int32 array, total a Python int."""
    leaves = prunable_leaves(mask, params)
    kept = sum((jnp.sum(m, dtype=jnp.int32) for m in leaves), jnp.int32(0))
    return kept, sum(m.size for m in leaves)


def density(mask, params) -> jax.Array:
    """Fraction of prunable coordinates kept (1.0 for an all-ones mask)."""
    kept, total = kept_and_total(mask, params)
    return kept.astype(jnp.float32) / max(total, 1)


def split_norm(params) -> tuple[dict, dict]:
    """``params`` -> (shared leaves, normalisation leaves), each a flat ``{'a/b/c': leaf}`` dict."""
    shared, norm = {}, {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(_key_name(entry) for entry in path)
        (norm if is_norm_path(path) else shared)[name] = leaf
    return shared, norm


def merge_norm(params, norm: dict):
    """``params`` with its normalisation leaves replaced by ``norm`` (from ``split_norm``)."""

    def pick(path, leaf):
        return norm.get("/".join(_key_name(entry) for entry in path), leaf)

    return jax.tree_util.tree_map_with_path(pick, params)
