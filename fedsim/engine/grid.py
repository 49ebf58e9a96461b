"""When cells of a sweep can share one vmapped program, and their arrays stacked along a cell axis.

Cells may differ only in ``seed`` and the traceable hyper-parameters of their algorithm (``client_lr``
and the ``AlgorithmSpec.traceable`` keys of its section): those become a leading array axis, everything
else is the same program. Arrays equal in every cell (the pooled data, usually) are shared (vmap axis
None), not copied per cell.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.config import flat_items
from fedsim.engine.setup import traceable_keys


class NotBatchable(Exception):
    """The cells cannot share one program (the message says why); run them one after another."""


def differing_keys(configs) -> list[str]:
    """Dotted config keys whose value is not the same in every cell."""
    flats = [flat_items(c) for c in configs]
    keys = set().union(*flats)
    return sorted(k for k in keys if any(f.get(k) != flats[0].get(k) for f in flats[1:]))


def check_batchable(configs) -> None:
    """Raises ``NotBatchable`` unless ``configs`` differ only in the seed and traceable keys, on one
    device."""
    if len(configs) < 2:
        raise NotBatchable("a grid needs two or more cells")
    allowed = ("seed", *traceable_keys(configs[0]))
    other = [k for k in differing_keys(configs) if k not in allowed]
    if other:
        raise NotBatchable(
            f"cells differ in {', '.join(other)} (a grid varies {', '.join(allowed)})"
        )
    if configs[0].devices != 1:
        raise NotBatchable(f"devices={configs[0].devices} (a grid runs on one device)")


def stack(arrays: list) -> tuple:
    """``(array, None)`` when every cell's array is the same, else ``(stacked, 0)``."""
    arrays = [np.asarray(a) for a in arrays]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise NotBatchable(f"cells' data differ in shape ({arrays[0].shape} vs others)")
    if all(np.array_equal(a, arrays[0]) for a in arrays[1:]):
        return jnp.asarray(arrays[0]), None
    return jnp.asarray(np.stack(arrays)), 0


def stack_tree(trees: list) -> tuple:
    """``stack`` leaf by leaf: ``(tree of arrays, tree of vmap axes)``."""
    structure = jax.tree.structure(trees[0])
    pairs = [stack(list(leaves)) for leaves in zip(*map(jax.tree.leaves, trees), strict=True)]
    return structure.unflatten([p[0] for p in pairs]), structure.unflatten([p[1] for p in pairs])


def stack_values(value_dicts: list[dict]) -> dict:
    """Each traceable value as a float32 ``[cells]`` array."""
    return {k: jnp.asarray([v[k] for v in value_dicts], jnp.float32) for k in value_dicts[0]}
