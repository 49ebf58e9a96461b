"""FedLTN's vmapped, chunked round equals a plain per-client Python loop on three toy clients: masked
SGD, BatchNorm statistics re-measured on each client's examples, the validation gate (above the
majority-class rate), layerwise magnitude pruning, personal BatchNorm, per-coordinate masked
averaging and covered-only server momentum, written out by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_engine_reference import BATCH, EPOCHS, KEY, NUM_CLIENTS, SIZES, client_schedule

from fedsim.algorithms.fedltn import fedltn
from fedsim.algorithms.task import Federation
from fedsim.compress import masks
from fedsim.engine.round import build_round_fn
from fedsim.models.base import ModelVars, from_flax

TARGET, RATE, MOMENTUM, SERVER_LR = 0.5, 0.3, 0.9, 1.0
JUMP, WARM_KEY = 2, jax.random.PRNGKey(11)
VAL = 4  # validation examples per client
LR = 0.5  # FedLTN's local lr here: two rounds open the validation gate on gate_toy


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = nn.Dense(6)(x.reshape((x.shape[0], -1)))
        bn_mask = None if mask is None else mask[:, None]
        x = nn.BatchNorm(use_running_average=not train)(x, mask=bn_mask)
        return nn.Dense(4)(nn.relu(x))


def toy_federation(x, y, order, val_size):
    """Three clients of ``SIZES`` examples taken along ``order``, each followed by its validation
    split of ``val_size``; the TinyBN model and its initialisation."""
    table = np.zeros((NUM_CLIENTS, SIZES.max()), np.int32)
    val = np.zeros((NUM_CLIENTS, val_size), np.int32)
    start = 0
    for c, n in enumerate(SIZES):
        table[c, :n] = order[start : start + n]
        val[c] = order[start + n : start + n + val_size]
        start += n + val_size
    num_val = np.full(NUM_CLIENTS, val_size, np.int32)
    fed = Federation(*map(jnp.asarray, (x, y, table, SIZES, val, num_val)))
    model = from_flax("tiny_bn", TinyBN())
    return fed, model, model.init(jax.random.PRNGKey(1), jnp.asarray(x[:1]))


@pytest.fixture(scope="module")
def toy():
    """Four random classes, three validation examples per client."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 2, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    return toy_federation(x, y, rng.permutation(40), 3)


@pytest.fixture(scope="module")
def gate_toy():
    """Two classes with a wide margin on one feature and balanced validation splits (labels
    alternate along the order), so two rounds open FedLTN's validation gate."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 2, 1)).astype(np.float32)
    y = np.arange(40, dtype=np.int32) % 2
    x[:, 0, 0, 0] = (2 * y - 1) * (2 + np.abs(x[:, 0, 0, 0]))
    order = np.stack([rng.permutation(np.arange(c, 40, 2)) for c in (0, 1)], axis=1)
    return toy_federation(x, y, order.reshape(-1), VAL)


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


def reference_statistics(fed, c, params):
    """TinyBN's BatchNorm mean and biased variance over client ``c``'s real examples."""
    x = np.asarray(fed.x)[np.asarray(fed.client_indices[c][: SIZES[c]])].reshape(SIZES[c], -1)
    h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    return {"batch_stats": {"BatchNorm_0": {"mean": h.mean(0), "var": h.var(0)}}}


def reference_train_and_prune(model, fed, c, server_params, own, batches):
    """Client ``c`` trains from ``server_params`` (its own norm leaves), re-measures its BatchNorm
    statistics, then prunes layerwise by magnitude when validation accuracy beats the split's
    majority-class rate; returns its new ``(mask, params, state)``."""
    mask = own[0]
    w, _ = reference_client(model, fed, server_params, own, batches)
    state = reference_statistics(fed, c, w)
    labels = np.asarray(fed.y[fed.val_indices[c]])
    logits, _ = model.apply(ModelVars(w, state), fed.x[fed.val_indices[c]], False, KEY)
    acc = np.mean(np.argmax(logits, -1) == labels)
    majority = np.bincount(labels).max() / len(labels)
    flags = jax.tree.leaves(masks.prunable(w))
    m_leaves, w_leaves = jax.tree.leaves(mask), jax.tree.leaves(w)
    kernels = [i for i, f in enumerate(flags) if f]
    density = sum(m_leaves[i].sum() for i in kernels) / sum(m_leaves[i].size for i in kernels)
    if acc >= 0.0 and acc > majority and density > TARGET:
        rate = min(RATE, 1 - TARGET / density)
        for i in kernels:
            flat_m = m_leaves[i].reshape(-1).astype(bool)
            scores = np.where(flat_m, np.abs(w_leaves[i].reshape(-1)), np.inf)
            drop = np.argsort(scores, kind="stable")[: int(np.floor(rate * flat_m.sum()))]
            flat_m = flat_m.copy()
            flat_m[drop] = False
            m_leaves[i] = flat_m.reshape(m_leaves[i].shape)
        mask = jax.tree.unflatten(jax.tree.structure(w), m_leaves)
        w = jax.tree.map(lambda p, m: p * m, w, mask)
    return mask, w, state


def reference_masked_mean(uploads, server_params):
    """Per coordinate: the mean over the uploads whose mask keeps it (else the server's value), and
    the mean statistics. ``uploads``: ``(mask, params, state)`` per client."""
    sums, cover, stat_sum = None, None, None
    for mask, w, state in uploads:
        full_m = jax.tree.map(lambda p, m: np.broadcast_to(m, p.shape).astype(float), w, mask)
        if cover is None:
            sums = jax.tree.map(lambda p, m: p * m, w, full_m)
            cover, stat_sum = full_m, state
        else:
            sums = jax.tree.map(lambda s, p, m: s + p * m, sums, w, full_m)
            cover = jax.tree.map(np.add, cover, full_m)
            stat_sum = jax.tree.map(np.add, stat_sum, state)
    avg = jax.tree.map(
        lambda s, c, w: np.where(c > 0, s / np.maximum(c, 1e-30), w), sums, cover, server_params
    )
    return avg, cover, jax.tree.map(lambda s: s / len(uploads), stat_sum)


def reference_round(model, fed, server, v, clients, round_index, per_round):
    sampled, _ = client_schedule(fed, round_index, 0, per_round)
    for c in sampled:
        _, batches = client_schedule(fed, round_index, int(c), per_round)
        clients[c] = reference_train_and_prune(model, fed, c, server[0], clients[c], batches)
    avg, cover, stats = reference_masked_mean([clients[c] for c in sampled], server[0])
    norm = jax.tree_util.tree_map_with_path(lambda p, _: masks.is_norm_path(p), server[0])
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
    return (new_w, stats), new_v, clients


def make_round(algorithm, per_round, chunk, epochs=EPOCHS):
    return jax.jit(
        build_round_fn(
            algorithm,
            num_clients=NUM_CLIENTS,
            clients_per_round=per_round,
            chunk_size=chunk,
            local_epochs=epochs,
            batch_size=BATCH,
        )
    )


def start_states(algorithm, init):
    """Engine and reference states before round 1."""
    server = algorithm.server_init(init)
    one = algorithm.client_init(init)
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (NUM_CLIENTS,) + a.shape), one)
    ref_server = (np_tree(init.params), np_tree(init.state))
    ref_v = jax.tree.map(np.zeros_like, ref_server[0])
    ref_clients = {
        c: (np_tree(one.mask), np_tree(init.params), np_tree(init.state))
        for c in range(NUM_CLIENTS)
    }
    return (server, states), (ref_server, ref_v, ref_clients)


def assert_matches(server, states, ref_server, ref_v, ref_clients):
    """Server model and momentum, and every client's mask, weights and statistics."""
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    jax.tree.map(close, server.model.params, ref_server[0])
    jax.tree.map(close, server.model.state, ref_server[1])
    jax.tree.map(close, server.momentum, ref_v)
    for c, (mask, params, state) in ref_clients.items():
        row = jax.tree.map(lambda s, c=c: s[c], states)
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(
                np.broadcast_to(a, np.shape(b)), b.astype(bool)
            ),
            row.mask,
            mask,
        )
        jax.tree.map(close, row.params, params)
        jax.tree.map(close, row.state, state)


def client_densities(states, init):
    return [
        float(masks.density(jax.tree.map(lambda s, c=c: s[c], states.mask), init.params))
        for c in range(NUM_CLIENTS)
    ]


def toy_fedltn(model, **kwargs):
    return fedltn(
        model,
        optax.sgd(LR),
        target_density=TARGET,
        prune_rate=RATE,
        prune_threshold=0.0,
        server_lr=SERVER_LR,
        server_momentum=MOMENTUM,
        **kwargs,
    )


@pytest.mark.parametrize(("per_round", "chunk"), [(3, 1), (3, 2), (2, 2)])
def test_fedltn_round_matches_python_loop(gate_toy, per_round, chunk):
    fed, model, init = gate_toy
    algorithm = toy_fedltn(model)
    round_fn = make_round(algorithm, per_round, chunk)
    (server, states), (ref_server, ref_v, ref_clients) = start_states(algorithm, init)
    for r in range(2):
        server, states, _ = round_fn(server, states, fed, jnp.int32(r), KEY)
        ref_server, ref_v, ref_clients = reference_round(
            model, fed, ref_server, ref_v, ref_clients, r, per_round
        )
    assert_matches(server, states, ref_server, ref_v, ref_clients)
    assert min(client_densities(states, init)) < 1.0  # the test exercises pruning


@pytest.mark.parametrize("chunk", [1, 2])
def test_jump_start_matches_python_loop(gate_toy, chunk):
    """Jump-Start (spec section 5): every client runs JUMP local-only virtual rounds from the initial
    model (train, then prune under the gate), uploads once, and the server starts from the masked mean
    with zero momentum; a normal round follows."""
    fed, model, init = gate_toy
    algorithm = toy_fedltn(model, jump_start_rounds=JUMP)
    warmup = make_round(algorithm.warmup.algorithm, NUM_CLIENTS, chunk, EPOCHS * JUMP)
    (server, states), (ref_server, ref_v, ref_clients) = start_states(algorithm, init)
    server, states, m = warmup(server, states, fed, jnp.int32(0), WARM_KEY)

    for c in range(NUM_CLIENTS):
        _, batches = client_schedule(fed, 0, c, NUM_CLIENTS, key=WARM_KEY, epochs=EPOCHS * JUMP)
        per_virtual_round = len(batches) // JUMP
        for j in range(JUMP):
            own = ref_clients[c]
            block = batches[j * per_virtual_round : (j + 1) * per_virtual_round]
            ref_clients[c] = reference_train_and_prune(model, fed, c, own[1], own, block)
    avg, _, stats = reference_masked_mean(list(ref_clients.values()), ref_server[0])
    ref_server = (avg, stats)
    assert_matches(server, states, ref_server, ref_v, ref_clients)
    assert np.all(np.asarray(m.down_bytes) == 0) and np.all(np.asarray(m.up_bytes) > 0)
    assert (
        min(client_densities(states, init)) < 1 - RATE
    )  # a client pruned twice: at the target after two events

    round_fn = make_round(algorithm, 2, chunk)
    server, states, _ = round_fn(server, states, fed, jnp.int32(0), KEY)
    ref_server, ref_v, ref_clients = reference_round(
        model, fed, ref_server, ref_v, ref_clients, 0, 2
    )
    assert_matches(server, states, ref_server, ref_v, ref_clients)
