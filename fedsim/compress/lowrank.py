"""Pure maths on factorised layers ``W = U Vᵀ`` (Horváth, Laskaridis, Rajput, Wang, 'Maestro: Uncovering
Low-Rank Structures via Trainable Decomposition', ICML 2024;
official code SamuelHorvath/Maestro-LoD).

A factorised layer is a node ``{'v': [..., R], 'u': [m, R], 'bias': [m]}`` of the params tree (see
``fedsim.models.layers``); its kept rank is ``state['ranks'][...path...]['keep']``. Layers are ordered by
their path, and ``rank_vector``/``with_rank_vector`` move between that collection and one int32 vector
``[L]``, so the sampler, the shrinking and the capacity tiers work on plain arrays under ``jit``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fedsim.compress.encode import FP32_BYTES

RANKS = "ranks"  # variable collection holding each factorised layer's kept rank


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(dict(tree))


def layer_paths(params) -> list[tuple]:
    """Paths (tuples of keys) of the factorised layers, in their canonical order."""
    flat = _flat(params)
    return sorted(k[:-1] for k in flat if k[-1] == "u" and k[:-1] + ("v",) in flat)


def rank_vector(state) -> jax.Array:
    """The kept ranks ``[L]`` (int32), one per factorised layer in ``layer_paths`` order."""
    flat = _flat(state[RANKS])
    return jnp.stack([jnp.asarray(flat[k], jnp.int32) for k in sorted(flat)])


def with_rank_vector(state, ranks):
    """``state`` with the kept ranks replaced by the vector ``ranks`` ``[L]``."""
    keys = sorted(_flat(state[RANKS]))
    new = traverse_util.unflatten_dict({k: ranks[i] for i, k in enumerate(keys)})
    return {**state, RANKS: new}


def at_ranks(model_vars, ranks):
    """``model_vars`` (a ``ModelVars``) with its factorised layers kept at ``ranks`` ``[L]``."""
    return model_vars._replace(state=with_rank_vector(model_vars.state, ranks))


def full_ranks(params) -> jax.Array:
    """The slot count ``R = min(n, m)`` of every factorised layer ``[L]``."""
    flat = _flat(params)
    return jnp.asarray([flat[p + ("u",)].shape[1] for p in layer_paths(params)], jnp.int32)


def svd_factors(kernel):
    """Thin SVD ``K = A diag(s) Bᵀ`` -> ``v = A sqrt(s)``, ``u = B sqrt(s)``; conv kernels ``[kh, kw,
    c_in, c_out]`` are factorised as ``(kh kw c_in) x c_out`` matrices."""
    fan_out = kernel.shape[-1]
    a, s, bt = jnp.linalg.svd(kernel.reshape(-1, fan_out), full_matrices=False)
    root = jnp.sqrt(s)
    v = (a * root).reshape(kernel.shape[:-1] + (s.shape[0],))
    return v, bt.T * root


def factorize(dense_params, like_params):
    """Dense params -> factorised params shaped like ``like_params``, by SVD of every kernel whose
    layer is factorised in ``like_params`` (the function is unchanged at full rank)."""
    factored = set(layer_paths(like_params))
    out = {}
    for key, leaf in _flat(dense_params).items():
        if key[-1] == "kernel" and key[:-1] in factored:
            out[key[:-1] + ("v",)], out[key[:-1] + ("u",)] = svd_factors(leaf)
        else:
            out[key] = leaf
    if set(out) != set(_flat(like_params)):
        raise ValueError("dense params do not match the factorised model's layers")
    return traverse_util.unflatten_dict(out)


def dense_shapes(params):
    """``params`` with every factorised layer's ``u``/``v`` replaced by the dense ``kernel`` shape."""
    factored = set(layer_paths(params))
    flat = _flat(params)
    out = {}
    for key, leaf in flat.items():
        if key[:-1] in factored and key[-1] in ("u", "v"):
            if key[-1] == "v":
                m = flat[key[:-1] + ("u",)].shape[0]
                out[key[:-1] + ("kernel",)] = jax.ShapeDtypeStruct(
                    leaf.shape[:-1] + (m,), leaf.dtype
                )
        else:
            out[key] = leaf
    return traverse_util.unflatten_dict(out)


def _slot_energy(params):
    """Per layer: squared norms of every slot of ``u`` and of ``v``, ``([R], [R])`` pairs."""
    flat = _flat(params)
    energy = []
    for path in layer_paths(params):
        u, v = flat[path + ("u",)], flat[path + ("v",)]
        energy.append((jnp.sum(u**2, axis=0), jnp.sum(v**2, axis=tuple(range(v.ndim - 1)))))
    return energy


def _tail_sums(x):
    """``[sum(x[b:]) for b]``: slot b's group holds every slot from b on."""
    return jnp.cumsum(x[::-1])[::-1]


def safe_sqrt(x):
    """``sqrt`` with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def group_lasso(params):
    """Hierarchical group lasso ``sum_l sum_b sqrt(a_b) + sqrt(c_b)`` with ``a_b``, ``c_b`` the
    squared norms of ``u``'s and ``v``'s slots ``>= b`` (Maestro's regulariser), over all ``R`` slots
    of every layer, cut ones too, as in the official code."""
    total = jnp.float32(0)
    for su, sv in _slot_energy(params):
        total += jnp.sum(safe_sqrt(_tail_sums(su)) + safe_sqrt(_tail_sums(sv)))
    return total


def importance(params) -> list[jax.Array]:
    """Per layer ``s_b = sqrt(a_b) sqrt(c_b)`` ``[R]``, non-increasing in ``b`` (Maestro's
    importance)."""
    return [
        safe_sqrt(_tail_sums(su)) * safe_sqrt(_tail_sums(sv)) for su, sv in _slot_energy(params)
    ]


CUTS = ("relative", "absolute")  # progressive shrinking's rules, see ``shrunk_ranks``


def _alive(s, epsilon, cut: str) -> jax.Array:
    if cut == "relative":
        return (s >= epsilon * s[0]) & (s > 0)
    return s >= epsilon


def shrunk_ranks(params, epsilon, cut: str = "relative") -> jax.Array:
    """Progressive shrinking: per layer ``r_l`` = the slots still alive ``[L]``. ``cut='relative'``:
    slot ``b`` is alive while ``s_b >= epsilon s_1`` (and ``s_b > 0``), i.e. the tail holding less
    than ``epsilon`` of the layer's largest importance ``s_1 = ||U|| ||V||`` is dead, at any scale of
    the layer; ``'absolute'``: ``s_b >= epsilon`` (the official code's rule, ``epsilon_ps`` 1e-5),
    which depends on how small the optimiser lets a dead slot get."""
    return jnp.stack(
        [jnp.sum(_alive(s, epsilon, cut), dtype=jnp.int32) for s in importance(params)]
    )


def sample_ranks(key, keep) -> jax.Array:
    """Maestro's per-layer ordered dropout: one layer ``l`` with ``P(l) ∝ keep_l`` is truncated to
    ``b ~ U{1..keep_l}``; every other layer keeps ``keep`` (i.i.d. per step)."""
    layer_key, rank_key = jax.random.split(key)
    logits = jnp.where(keep > 0, jnp.log(jnp.maximum(keep, 1).astype(jnp.float32)), -jnp.inf)
    layer = jax.random.categorical(layer_key, logits)
    b = jax.random.randint(rank_key, (), 1, keep[layer] + 1)
    return jnp.where(jnp.any(keep > 0), keep.at[layer].set(b), keep)


def tier_caps(keep, fraction) -> jax.Array:
    """A capacity tier's ranks: ``ceil(p keep)``, at least 1 where ``keep >= 1`` (FjORD-style
    tiers: Horváth et al., 'FjORD: Fair and Accurate Federated Learning under Heterogeneous Targets
    with Ordered Dropout', NeurIPS 2021)."""
    caps = jnp.ceil(fraction * keep.astype(jnp.float32)).astype(jnp.int32)
    return jnp.where(keep > 0, jnp.maximum(caps, 1), 0)


def slot_masks(params, caps):
    """A mask tree over ``params``: slot ``< cap`` on ``u``/``v`` (shape ``[R]``, broadcasting on the
    slot axis), scalar True on every other leaf."""
    index = {path: i for i, path in enumerate(layer_paths(params))}
    out = {}
    for key, leaf in _flat(params).items():
        if key[-1] in ("u", "v") and key[:-1] in index:
            out[key] = jnp.arange(leaf.shape[-1]) < caps[index[key[:-1]]]
        else:
            out[key] = jnp.bool_(True)
    return traverse_util.unflatten_dict(out)


def _layer_sizes(params):
    """Per factorised layer ``(n, m)``: fan-in of ``v``'s map and fan-out."""
    flat = _flat(params)
    return [
        (math.prod(flat[p + ("v",)].shape[:-1]), flat[p + ("u",)].shape[0])
        for p in layer_paths(params)
    ]


def _other_params(params) -> int:
    """Entries of every leaf that is not a factor (biases, norms, embeddings, dense layers)."""
    return sum(np.size(leaf) for key, leaf in _flat(params).items() if key[-1] not in ("u", "v"))


def deployed_params(params, ranks) -> jax.Array:
    """Maestro's deployed size: ``sum_l min(n m, r_l (n + m))`` plus every other parameter."""
    total = jnp.int32(_other_params(params))
    for (n, m), r in zip(_layer_sizes(params), ranks, strict=True):
        total += jnp.minimum(n * m, r * (n + m))
    return total


def dense_params(params) -> int:
    """The size of the same network with every factorised layer stored dense."""
    return _other_params(params) + sum(n * m for n, m in _layer_sizes(params))


def traffic_bytes(params, caps) -> jax.Array:
    """Bytes to send the factors' slots ``< cap`` (``4 cap (n + m)`` per layer) and every other param."""
    total = jnp.int32(FP32_BYTES * _other_params(params))
    for (n, m), c in zip(_layer_sizes(params), caps, strict=True):
        total += FP32_BYTES * c * (n + m)
    return total


def without_ranks(state) -> dict:
    """The model state without the kept-rank collection (what is averaged, stored or sent)."""
    return {k: v for k, v in state.items() if k != RANKS}


def state_bytes(state) -> int:
    """Bytes of the model state a deployed model stores (normalisation statistics; not the ranks)."""
    return FP32_BYTES * sum(np.size(x) for x in jax.tree.leaves(without_ranks(state)))


def compact(params, ranks) -> dict:
    """The deployable params (host arrays): each layer sliced to its kept rank, or merged back to a
    dense ``kernel`` where ``r (n + m) > n m``."""
    flat = {k: np.asarray(v) for k, v in _flat(params).items()}
    for (n, m), r, path in zip(
        _layer_sizes(params), np.asarray(ranks), layer_paths(params), strict=True
    ):
        v, u = flat.pop(path + ("v",))[..., :r], flat.pop(path + ("u",))[:, :r]
        if r * (n + m) > n * m:
            flat[path + ("kernel",)] = (v.reshape(n, r) @ u.T).reshape(v.shape[:-1] + (m,))
        else:
            flat[path + ("v",)], flat[path + ("u",)] = v, u
    return traverse_util.unflatten_dict(flat)


def ranks_for_budget(params, budget: int) -> jax.Array:
    """Truncated-SVD baseline ranks: the same fraction ``f`` of every layer's slots (``ceil(f R)``),
    the largest ``f`` (bisection) whose ``deployed_params`` fits ``budget``."""
    full = full_ranks(params)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        fits = int(deployed_params(params, tier_caps(full, mid))) <= budget
        lo, hi = (mid, hi) if fits else (lo, mid)
    return tier_caps(full, lo)


def slot_energies(params) -> list[np.ndarray]:
    """Each factorised layer's squared singular values ``s_i^2 = (||u_i|| ||v_i||)^2`` (the SVD
    factors of ``svd_factors`` carry ``sqrt(s)`` on both sides), in slot order."""
    flat = _flat(params)
    out = []
    for path in layer_paths(params):
        u = np.asarray(flat[path + ("u",)])
        v = np.asarray(flat[path + ("v",)]).reshape(-1, u.shape[1])
        out.append((np.linalg.norm(u, axis=0) * np.linalg.norm(v, axis=0)) ** 2)
    return out


def _greedy_ranks(params, cost_per_slot, fits) -> jax.Array:
    """Every layer keeps one slot, then slots are added across layers in order of singular-value
    energy per unit of cost (``s^2 / cost_per_slot[l]``) while ``fits(ranks)``."""
    order = sorted(
        ((e / cost, layer, i) for layer, (es, cost) in enumerate(zip(slot_energies(params), cost_per_slot, strict=True))
         for i, e in enumerate(es) if i > 0),
        reverse=True,
    )  # fmt: skip
    ranks = np.ones(len(cost_per_slot), np.int32)
    for _, layer, _ in order:
        trial = ranks.copy()
        trial[layer] += 1
        if fits(trial):  # a slot of a cheaper layer may still fit
            ranks = trial
    return jnp.asarray(ranks)


def ranks_by_energy(params, budget: int) -> jax.Array:
    """Parameter-aware truncated-SVD ranks: every layer keeps at least one slot, then slots are added
    across layers in order of singular-value energy per parameter it costs (``s^2 / (n + m)``),
    the most that fit ``budget`` deployed parameters. With equal slot costs this is the truncation
    with the least total squared error (Eckart-Young per layer, the largest ``s^2`` overall)."""
    costs = [n + m for n, m in _layer_sizes(params)]
    return _greedy_ranks(params, costs, lambda r: int(deployed_params(params, r)) <= budget)


def layer_positions(params, macs_at) -> np.ndarray:
    """Per factorised layer, the positions ``P_l`` it is applied at (1 for a Dense layer on vectors,
    ``H' W'`` for a conv): the multiply-accumulates ``macs_at(ranks)`` loses when that layer alone
    is at rank 0, over its dense ``n m``."""
    full = full_ranks(params)
    total = int(macs_at(full))
    return np.array(
        [(total - int(macs_at(full.at[i].set(0)))) // (n * m) for i, (n, m) in enumerate(_layer_sizes(params))]
    )  # fmt: skip


def factorised_macs(params, ranks, positions) -> jax.Array:
    """MACs per example of the factorised layers at ``ranks``: ``sum_l P_l min(n m, r_l (n + m))``."""
    total = jnp.int32(0)
    for (n, m), r, p in zip(_layer_sizes(params), ranks, positions, strict=True):
        total += int(p) * jnp.minimum(n * m, r * (n + m))
    return total


def ranks_by_macs(params, budget: int, macs_at) -> jax.Array:
    """MAC-aware truncated-SVD ranks: as ``ranks_by_energy``, but slots are ordered by energy per
    multiply-accumulate they cost (``s^2 / (P_l (n + m))``, ``P_l`` from ``layer_positions``) and
    added while ``macs_at`` (the model's MACs per example, non-factorised layers included) fits
    ``budget``; a conv over ``H' W'`` positions pays ``H' W'`` times what a Dense slot pays."""
    positions = layer_positions(params, macs_at)
    total = closed_form_macs(params, macs_at, positions)
    costs = [p * (n + m) for p, (n, m) in zip(positions, _layer_sizes(params), strict=True)]
    return _greedy_ranks(params, costs, lambda r: total(r) <= budget)


def closed_form_macs(params, macs_at, positions):
    """``macs_at`` (a model's MACs per example at kept ranks ``[L]``, non-factorised layers
    included) as host arithmetic, exact at any ranks: the non-factorised layers' MACs, found once,
    plus ``factorised_macs`` at ``positions`` (``layer_positions``)."""
    full = full_ranks(params)
    fixed = int(macs_at(full)) - int(factorised_macs(params, full, positions))
    return lambda ranks: fixed + int(factorised_macs(params, np.asarray(ranks), positions))


def deployed_size(model_vars) -> tuple[jax.Array, jax.Array]:
    """``(params, bytes)`` a client stores for ``model_vars``: factorised layers at their kept rank in
    the cheaper form, 4 bytes per value; a model without factorised layers stored dense."""
    ranks = rank_vector(model_vars.state) if RANKS in model_vars.state else ()
    params = deployed_params(model_vars.params, ranks)
    return params, FP32_BYTES * params + state_bytes(model_vars.state)
