"""The streamed reduce over the client axis (after fedjax's MeanStat): contributions of a chunk of
clients are summed into a running total, excluding clients that failed (non-finite results) or are
padding, so memory depends on the chunk size and not on the number of clients. Algorithms that aggregate
every update themselves (``stacked``) get the kept rows instead of their sum."""

import jax
import jax.numpy as jnp


def all_finite(tree) -> jax.Array:
    """True when every floating entry of ``tree`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def keep_rows(contributions, include):
    """``contributions`` with the entries of its leading axis not in ``include`` zeroed.

    Zeroed with ``where`` (not multiplied), so a NaN there cannot leak into a sum.
    """

    def keep(leaf):
        mask = include.reshape(include.shape + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, leaf, jnp.zeros_like(leaf))

    return jax.tree.map(keep, contributions)


def add_chunk(total, contributions, include):
    """``total + sum_i include[i] * contributions[i]`` over a chunk's leading axis."""
    kept = keep_rows(contributions, include)
    return jax.tree.map(lambda acc, leaf: acc + jnp.sum(leaf, axis=0), total, kept)


def zeros_like_one(contributions_shape):
    """A zero total shaped like one client's contribution (from a chunk's ``ShapeDtypeStruct`` tree)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), contributions_shape)
