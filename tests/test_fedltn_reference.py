"""FedLTN's vmapped, chunked round equals a plain per-client Python loop on three toy clients: masked
SGD, the validation gate, layerwise magnitude pruning, personal BatchNorm, per-coordinate masked
averaging and covered-only server momentum, written out by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_engine_reference import BATCH, EPOCHS, KEY, LR, NUM_CLIENTS, SIZES, client_schedule

from fedsim.algorithms.fedltn import fedltn
from fedsim.compress import masks
from fedsim.engine.round import Federation, build_round_fn
from fedsim.models.base import ModelVars, from_flax

TARGET, RATE, MOMENTUM, SERVER_LR = 0.5, 0.3, 0.9, 1.0


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = nn.Dense(6)(x.reshape((x.shape[0], -1)))
        bn_mask = None if mask is None else mask[:, None]
        x = nn.BatchNorm(use_running_average=not train)(x, mask=bn_mask)
        return nn.Dense(4)(nn.relu(x))


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 2, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    order = rng.permutation(40)
    table = np.zeros((NUM_CLIENTS, SIZES.max()), np.int32)
    val = np.zeros((NUM_CLIENTS, 3), np.int32)
    start = 0
    for c, n in enumerate(SIZES):
        table[c, :n] = order[start : start + n]
        val[c] = order[start + n : start + n + 3]
        start += n + 3
    fed = Federation(*map(jnp.asarray, (x, y, table, SIZES, val, np.full(3, 3, np.int32))))
    model = from_flax("tiny_bn", TinyBN())
    return fed, model, model.init(jax.random.PRNGKey(1), jnp.asarray(x[:1]))


def np_tree(tree):
    return jax.tree.map(lambda a: np.array(a, np.float64), tree)


def reference_client(model, fed, server_params, own, batches):
    """One FedLTN client by hand; ``own = (mask, params, state)`` in numpy."""
    mask, mine, state = own
    norm = jax.tree_util.tree_map_with_path(lambda p, _: masks.is_norm_path(p), server_params)
    w = jax.tree.map(lambda n, s, m: m if n else s, norm, server_params, mine)
    w = jax.tree.map(lambda p, m: p * m, w, mask)
    for batch in batches:

        def loss(p, s, batch=batch):
            logits, new = model.apply(ModelVars(p, s), fed.x[batch], True, KEY)
            return optax.softmax_cross_entropy_with_integer_labels(logits, fed.y[batch]).mean(), new

        as32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
        (_, state), g = jax.value_and_grad(loss, has_aux=True)(as32(w), as32(state))
        w = jax.tree.map(lambda p, gi, m: p - LR * np.asarray(gi) * m, w, g, mask)
        state = np_tree(state)
    return w, state


def reference_round(model, fed, server, v, clients, round_index, per_round):
    sampled, _ = client_schedule(fed, round_index, 0, per_round)
    sums, cover, stat_sum = None, None, None
    for c in sampled:
        _, batches = client_schedule(fed, round_index, int(c), per_round)
        mask, mine, state = clients[c]
        w, state = reference_client(model, fed, server[0], (mask, mine, state), batches)
        logits, _ = model.apply(ModelVars(w, state), fed.x[fed.val_indices[c]], False, KEY)
        acc = np.mean(np.argmax(logits, -1) == np.asarray(fed.y[fed.val_indices[c]]))
        flags = jax.tree.leaves(masks.prunable(w))
        m_leaves, w_leaves = jax.tree.leaves(mask), jax.tree.leaves(w)
        kernels = [i for i, f in enumerate(flags) if f]
        density = sum(m_leaves[i].sum() for i in kernels) / sum(m_leaves[i].size for i in kernels)
        if acc >= 0.0 and density > TARGET:
            rate = min(RATE, 1 - TARGET / density)
            for i in kernels:
                flat_m = m_leaves[i].reshape(-1).astype(bool)
                scores = np.where(flat_m, np.abs(w_leaves[i].reshape(-1)), np.inf)
                drop = np.argsort(scores, kind="stable")[: int(np.floor(rate * flat_m.sum()))]
                flat_m = flat_m.copy()
                flat_m[drop] = False
                m_leaves[i] = flat_m.reshape(m_leaves[i].shape)
            treedef = jax.tree.structure(w)
            mask = jax.tree.unflatten(treedef, m_leaves)
            w = jax.tree.map(lambda p, m: p * m, w, mask)
        clients[c] = (mask, w, state)
        full_m = jax.tree.map(lambda p, m: np.broadcast_to(m, p.shape).astype(float), w, mask)
        if cover is None:
            sums = jax.tree.map(lambda p, m: p * m, w, full_m)
            cover, stat_sum = full_m, state
        else:
            sums = jax.tree.map(lambda s, p, m: s + p * m, sums, w, full_m)
            cover = jax.tree.map(np.add, cover, full_m)
            stat_sum = jax.tree.map(np.add, stat_sum, state)
    norm = jax.tree_util.tree_map_with_path(lambda p, _: masks.is_norm_path(p), server[0])
    avg = jax.tree.map(
        lambda s, c, w: np.where(c > 0, s / np.maximum(c, 1e-30), w), sums, cover, server[0]
    )
    new_v = jax.tree.map(
        lambda n, w, a, c, vi: vi if n else np.where(c > 0, MOMENTUM * vi + (w - a), vi),
        norm,
        server[0],
        avg,
        cover,
        v,
    )
    new_w = jax.tree.map(
        lambda n, w, a, c, vi: a if n else np.where(c > 0, w - SERVER_LR * vi, w),
        norm,
        server[0],
        avg,
        cover,
        new_v,
    )
    stats = jax.tree.map(lambda s: s / len(sampled), stat_sum)
    return (new_w, stats), new_v, clients


@pytest.mark.parametrize(("per_round", "chunk"), [(3, 1), (3, 2), (2, 2)])
def test_fedltn_round_matches_python_loop(toy, per_round, chunk):
    fed, model, init = toy
    algorithm = fedltn(
        model,
        optax.sgd(LR),
        target_density=TARGET,
        prune_rate=RATE,
        prune_threshold=0.0,
        server_lr=SERVER_LR,
        server_momentum=MOMENTUM,
    )
    round_fn = jax.jit(
        build_round_fn(
            algorithm,
            num_clients=NUM_CLIENTS,
            clients_per_round=per_round,
            chunk_size=chunk,
            local_epochs=EPOCHS,
            batch_size=BATCH,
        )
    )
    server = algorithm.server_init(init)
    one = algorithm.client_init(init)
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (NUM_CLIENTS,) + a.shape), one)

    ref_server = (np_tree(init.params), np_tree(init.state))
    ref_v = jax.tree.map(np.zeros_like, ref_server[0])
    ref_clients = {
        c: (np_tree(one.mask), np_tree(init.params), np_tree(init.state))
        for c in range(NUM_CLIENTS)
    }
    for r in range(2):
        server, states, _ = round_fn(server, states, fed, jnp.int32(r), KEY)
        ref_server, ref_v, ref_clients = reference_round(
            model, fed, ref_server, ref_v, ref_clients, r, per_round
        )
    tol = dict(rtol=2e-4, atol=2e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, **tol), server.model.params, ref_server[0]
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), server.momentum, ref_v)
    for c, (mask, params, state) in ref_clients.items():
        row = jax.tree.map(lambda s, c=c: s[c], states)
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(
                np.broadcast_to(a, np.shape(b)), b.astype(bool)
            ),
            row.mask,
            mask,
        )
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), row.params, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), row.state, state)
    densities = [
        float(masks.density(jax.tree.map(lambda s, c=c: s[c], states.mask), init.params))
        for c in range(NUM_CLIENTS)
    ]
    assert min(densities) < 1.0  # the test exercises pruning
