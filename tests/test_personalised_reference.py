"""The personalised algorithms' vmapped, chunked rounds equal a plain per-client Python loop on three
toy clients (TinyBN, a validation split): LotteryFL, Sub-FedAvg (unstructured), FedBN, Ditto, FedAvg +
fine-tuning and local-only training, each written out by hand from its paper and module description
(numpy weights, own SGD loop, own magnitude pruning by sorting, own aggregation). Every test compares the
server model, every client's persistent state row and the model each client deploys (``personalize``)
after two rounds (LotteryFL: three), with full and partial participation and chunks of 1 and 2."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_engine_reference
import test_fedltn_reference
from test_engine_reference import (
    BATCH,
    EPOCHS,
    KEY,
    LR,
    NUM_CLIENTS,
    ROUNDS,
    client_schedule,
    real_batches,
)

from fedsim.algorithms.base import Dataset
from fedsim.algorithms.ditto import ditto
from fedsim.algorithms.fedavg_ft import fedavg_ft
from fedsim.algorithms.fedbn import fedbn
from fedsim.algorithms.local_only import local_only
from fedsim.algorithms.lotteryfl import lotteryfl
from fedsim.algorithms.subfedavg import subfedavg
from fedsim.algorithms.task import client_task
from fedsim.models.base import ModelVars

toy = test_fedltn_reference.toy  # the fixture: three clients with validation splits, TinyBN
TOL = dict(rtol=2e-4, atol=1e-5)
PERSONAL_KEY = jax.random.PRNGKey(11)  # the evaluator's key for the personal models' tasks
FT_EPOCHS = 1
fold_in = functools.partial(jax.random.fold_in, PERSONAL_KEY)


# ---------------------------------------------------------------- the hand-written reference pieces


def f64(tree):
    return jax.tree.map(lambda a: np.array(a, np.float64), tree)


def f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def path_name(path) -> str:
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def is_kernel(path) -> bool:
    """Dense kernels are pruned; biases and BatchNorm never (TinyBN's only kernels are Dense)."""
    return path_name(path).endswith("kernel")


def is_norm(path) -> bool:
    return path_name(path).startswith("BatchNorm")


@functools.partial(jax.jit, static_argnums=0)
def loss_grad(model, params, state, x, y):
    """Gradient of the mean cross-entropy of one real batch, and the BatchNorm statistics after it."""

    def loss(p):
        logits, new_state = model.apply(ModelVars(p, state), x, True, KEY)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

    (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return grads, new_state


def sgd(model, fed, params, state, batches, mask=None, prox=None):
    """Plain SGD over ``batches`` (lists of example ids); ``mask`` multiplies the gradient and
    ``prox=(lam, anchor)`` adds ``lam (w - anchor)`` to it."""
    lam, anchor = prox if prox is not None else (0.0, None)
    for batch in batches:
        g, state = loss_grad(model, f32(params), f32(state), fed.x[batch], fed.y[batch])
        g, state = f64(g), f64(state)
        if prox is not None:
            g = jax.tree.map(lambda gi, p, a: gi + lam * (p - a), g, params, anchor)
        if mask is not None:
            g = jax.tree.map(np.multiply, g, mask)
        params = jax.tree.map(lambda p, gi: p - LR * gi, params, g)
    return params, state


def accuracy(model, fed, client, params, state):
    """Validation accuracy (eval mode, running statistics)."""
    val = np.asarray(fed.val_indices[client])
    logits, _ = model.apply(ModelVars(f32(params), f32(state)), fed.x[val], False, KEY)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(fed.y)[val]))


def ones_mask(params):
    return jax.tree.map(lambda p: np.ones(np.shape(p)), params)


def density(mask) -> float:
    kernels = [m for path, m in jax.tree_util.tree_leaves_with_path(mask) if is_kernel(path)]
    return sum(m.sum() for m in kernels) / sum(m.size for m in kernels)


def prune(params, mask, rate):
    """Per kernel, drops the ``floor(rate * alive)`` surviving weights of smallest magnitude."""

    def one(path, p, m):
        if not is_kernel(path):
            return m
        alive = m.reshape(-1) > 0
        order = np.argsort(np.where(alive, np.abs(p).reshape(-1), np.inf), kind="stable")
        kept = alive.copy()
        kept[order[: int(np.floor(rate * alive.sum()))]] = False
        return kept.reshape(m.shape).astype(np.float64)

    return jax.tree_util.tree_map_with_path(one, params, mask)


def hamming(mask_a, mask_b) -> float:
    """Mean over kernels of the fraction of coordinates where the masks differ."""
    pairs = zip(jax.tree_util.tree_leaves_with_path(mask_a), jax.tree.leaves(mask_b), strict=True)
    return float(np.mean([np.mean(a != b) for (path, a), b in pairs if is_kernel(path)]))


def weighted_mean(trees, weights):
    return jax.tree.map(
        lambda *leaves: (
            sum(w * leaf for w, leaf in zip(weights, leaves, strict=True)) / sum(weights)
        ),
        *trees,
    )


def coverage_mean(server_params, params, client_masks):
    """Per coordinate: mean over the clients whose mask keeps it; the server value if nobody does."""
    kept = jax.tree.map(lambda *ms: sum(ms), *client_masks)
    covered = [jax.tree.map(np.multiply, p, m) for p, m in zip(params, client_masks, strict=True)]
    total = jax.tree.map(lambda *leaves: sum(leaves), *covered)
    return jax.tree.map(
        lambda s, k, w: np.where(k > 0, s / np.maximum(k, 1), w), total, kept, server_params
    )


def sampled_clients(fed, r, per_round):
    sampled, _ = client_schedule(fed, r, 0, per_round)
    return [int(c) for c in sampled]


def local_batches(fed, r, client, per_round):
    return client_schedule(fed, r, client, per_round)[1]


# ---------------------------------------------------------------------------- the engine side


def run_engine(algorithm, fed, init, per_round, chunk, rounds=ROUNDS):
    """The engine's server state and each client's state row after ``rounds`` rounds."""
    server, clients = test_engine_reference.run_engine(
        algorithm, fed, init, per_round, chunk, rounds
    )
    return server, [jax.tree.map(lambda s, c=c: s[c], clients) for c in range(NUM_CLIENTS)]


def engine_personal(algorithm, server, rows, fed, epochs=FT_EPOCHS):
    """What each client deploys, with the evaluator's task (``fold_in(key, row)``)."""

    @jax.jit
    def one(row, state):
        task = client_task(
            fed, row, jax.random.fold_in(PERSONAL_KEY, row), epochs=epochs, batch_size=BATCH
        )
        return algorithm.personalize(server, state, task, Dataset(fed.x, fed.y)).model

    return [one(jnp.int32(c), row) for c, row in enumerate(rows)]


def assert_deployed(algorithm, server, rows, fed, expected):
    """Each client deploys ``expected[c]``'s weights with BatchNorm statistics re-measured on its own
    training examples (``fedsim.algorithms.norm_stats``), computed here by hand."""
    deployed = engine_personal(algorithm, server, rows, fed)
    for c, (got, want) in enumerate(zip(deployed, expected, strict=True)):
        stats = test_fedltn_reference.reference_statistics(fed, c, want.params)
        assert_close(got, ModelVars(want.params, stats))


def assert_close(actual, expected):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, **TOL), actual, expected)


def assert_mask(actual, expected):
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.broadcast_to(a, np.shape(b)), b > 0),
        actual,
        expected,
    )


# ---------------------------------------------------------------------------------- LotteryFL

LT_TARGET, LT_RATE, LT_ROUNDS = 0.6, 0.3, 3


def lotteryfl_reference(model, fed, init, per_round, threshold):
    """LotteryFL (Li et al. 2020; spec section 8): a client receives ``m * w_g``; if that model's
    validation accuracy is above the threshold and its density above the target it prunes
    ``min(rate, 1 - target/density)`` of the surviving received weights per layer and rewinds to
    ``m * theta_0`` (every parameter from theta_0), then trains with masked gradients. The server averages
    every coordinate over the clients that keep it (unweighted), statistics by plain mean."""
    theta0 = f64(init.params)
    w_g, s_g = f64(init.params), f64(init.state)
    client_masks = [ones_mask(w_g) for _ in range(NUM_CLIENTS)]
    events = []
    for r in range(LT_ROUNDS):
        trained, states, kept = [], [], []
        for c in sampled_clients(fed, r, per_round):
            mask = client_masks[c]
            received = jax.tree.map(np.multiply, w_g, mask)
            acc, dens = accuracy(model, fed, c, received, s_g), density(mask)
            start, rate = received, min(LT_RATE, 1 - LT_TARGET / dens)
            pruned = acc > threshold and dens > LT_TARGET
            if pruned:
                mask = prune(received, mask, rate)
                start = jax.tree.map(np.multiply, theta0, mask)
            events.append(
                dict(r=r, c=c, gate=acc > threshold, sparse=dens < 1, pruned=pruned, rate=rate)
            )
            w, s = sgd(model, fed, start, s_g, local_batches(fed, r, c, per_round), mask)
            client_masks[c] = mask
            trained.append(w)
            states.append(s)
            kept.append(mask)
        w_g = coverage_mean(w_g, trained, kept)
        s_g = weighted_mean(states, [1.0] * len(states))
    personal = [jax.tree.map(np.multiply, w_g, m) for m in client_masks]
    return (w_g, s_g), client_masks, [ModelVars(p, s_g) for p in personal], events


# Three rounds. Threshold -1: every client prunes every round while above the target (all rewind in
# round 2, the rate is clipped to reach the target); threshold 0: the accuracy gate lets a client prune in
# round 2, holds the others back (masks differ, so coverage is partial), and in round 3 passes that
# client only on its masked model (the unmasked server model would fail it).
@pytest.mark.parametrize(("per_round", "chunk", "threshold"), [(3, 1, -1.0), (2, 2, 0.0)])
def test_lotteryfl_matches_python_loop(toy, per_round, chunk, threshold):
    fed, model, init = toy
    algorithm = lotteryfl(
        model,
        optax.sgd(LR),
        target_density=LT_TARGET,
        prune_rate=LT_RATE,
        prune_threshold=threshold,
    )
    server, rows = run_engine(algorithm, fed, init, per_round, chunk, LT_ROUNDS)
    (w_g, s_g), client_masks, personal, events = lotteryfl_reference(
        model, fed, init, per_round, threshold
    )

    assert_close(server.model.params, w_g)
    assert_close(server.model.state, s_g)
    assert_close(server.initial, f64(init.params))
    for row, mask in zip(rows, client_masks, strict=True):
        assert_mask(row, mask)
    assert_deployed(algorithm, server, rows, fed, personal)
    # pruning after the server moved (a real rewind); the gate goes both ways (threshold 0) and passes
    # a client that already pruned; the clipped rate near the target (threshold -1)
    assert any(e["r"] > 0 and e["pruned"] for e in events), events
    if threshold >= 0:
        assert {e["gate"] for e in events} == {True, False}, events
        assert any(e["gate"] and e["sparse"] for e in events), events
    else:
        assert any(e["pruned"] and e["rate"] < LT_RATE for e in events), events


# --------------------------------------------------------------------------------- Sub-FedAvg

SF_TARGET, SF_RATE, SF_DIST = 0.1, 0.3, 0.03


def subfedavg_reference(model, fed, init, per_round, target, acc_thresh):
    """Sub-FedAvg unstructured (Vahidian et al. 2021, official ``client_u.py``; spec section 9): train
    ``m * w_g`` with masked gradients; candidate masks ``m1`` after epoch 1 and ``m2`` after the last
    epoch, each dropping ``rate`` of the surviving weights per layer; if their mean Hamming distance
    exceeds the threshold and the client is above the target density, ``m2`` (recomputed with
    ``min(0.05, gap / (1 - pruned))`` near the target) is applied without rewinding and kept only if
    validation accuracy stays above the threshold. The client keeps its last model; the server averages
    every coordinate over the clients that keep it (unweighted)."""
    w_g, s_g = f64(init.params), f64(init.state)
    clients = [(ones_mask(w_g), w_g, s_g) for _ in range(NUM_CLIENTS)]
    events = []
    for r in range(ROUNDS):
        trained, states, kept = [], [], []
        for c in sampled_clients(fed, r, per_round):
            mask = clients[c][0]
            batches = local_batches(fed, r, c, per_round)
            first = math.ceil(int(fed.num_examples[c]) / BATCH)  # real steps of one epoch
            w1, s1 = sgd(
                model, fed, jax.tree.map(np.multiply, w_g, mask), s_g, batches[:first], mask
            )
            m1 = prune(w1, mask, SF_RATE)
            w2, s2 = sgd(model, fed, w1, s1, batches[first:], mask)
            m2 = prune(w2, mask, SF_RATE)
            dist, dens = hamming(m1, m2), density(mask)
            moved, above, accepted = dist > SF_DIST, dens > target, False
            if moved and above:
                pruned_fraction = 1 - dens
                gap = (1 - target) - pruned_fraction
                if gap < SF_RATE:
                    m2 = prune(w2, mask, min(0.05, gap / (1 - pruned_fraction)))
                candidate = jax.tree.map(np.multiply, w2, m2)
                if accuracy(model, fed, c, candidate, s2) > acc_thresh:
                    mask, w2, accepted = m2, candidate, True
            events.append(dict(r=r, c=c, dist=dist, moved=moved, above=above, accepted=accepted))
            clients[c] = (mask, w2, s2)
            trained.append(w2)
            states.append(s2)
            kept.append(mask)
        w_g = coverage_mean(w_g, trained, kept)
        s_g = weighted_mean(states, [1.0] * len(states))
    return (w_g, s_g), clients, events


def check_subfedavg(toy, per_round, chunk, target, acc_thresh):
    fed, model, init = toy
    algorithm = subfedavg(
        model,
        optax.sgd(LR),
        local_epochs=EPOCHS,
        target_density=target,
        prune_rate=SF_RATE,
        prune_threshold=acc_thresh,
        dist_thresh=SF_DIST,
    )
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    (w_g, s_g), clients, events = subfedavg_reference(
        model, fed, init, per_round, target, acc_thresh
    )

    assert_close(server.model.params, w_g)
    assert_close(server.model.state, s_g)
    for row, (mask, params, state) in zip(rows, clients, strict=True):
        assert_mask(row.mask, mask)
        assert_close(row.model, ModelVars(params, state))
    assert_deployed(algorithm, server, rows, fed, [ModelVars(p, s) for _, p, s in clients])
    return events


# Target density 0.1 (never within ``prune_rate`` of it in two rounds). Accuracy threshold -1: the
# distance gate alone decides; threshold 0: the accuracy gate rejects some candidates that moved.
@pytest.mark.parametrize(("per_round", "chunk", "acc_thresh"), [(3, 1, -1.0), (2, 2, 0.0)])
def test_subfedavg_matches_python_loop(toy, per_round, chunk, acc_thresh):
    events = check_subfedavg(toy, per_round, chunk, SF_TARGET, acc_thresh)
    assert {e["moved"] for e in events} == {True, False}, events
    accepted = {e["accepted"] for e in events if e["moved"]}
    assert accepted == ({True} if acc_thresh < 0 else {True, False}), events


def test_subfedavg_near_target_matches_python_loop(toy):
    """Target density 0.5: the second round is within ``prune_rate`` of the target, where the
    distance gate compares ``prune_rate`` candidates and the smaller step is applied after it."""
    check_subfedavg(toy, 2, 2, 0.5, 0.0)


# -------------------------------------------------------------------------------------- FedBN


def fedbn_reference(model, fed, init, per_round):
    """FedBN (Li et al. 2021): FedAvg weighted by ``n_k`` in which each client keeps its own
    BatchNorm scale, bias and statistics; the server model's normalisation is the round's weighted mean
    of the clients' (reported only, never sent)."""
    w_g, s_g = f64(init.params), f64(init.state)
    norm0 = {
        path_name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(w_g) if is_norm(p)
    }
    clients = [(dict(norm0), s_g) for _ in range(NUM_CLIENTS)]
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            norm, state = clients[c]
            start = jax.tree_util.tree_map_with_path(
                lambda path, leaf, norm=norm: norm[path_name(path)] if is_norm(path) else leaf, w_g
            )
            w, s = sgd(model, fed, start, state, local_batches(fed, r, c, per_round))
            leaves = jax.tree_util.tree_leaves_with_path(w)
            clients[c] = ({path_name(p): leaf for p, leaf in leaves if is_norm(p)}, s)
            trained.append(w)
            states.append(s)
            weights.append(float(fed.num_examples[c]))
        w_g, s_g = weighted_mean(trained, weights), weighted_mean(states, weights)
    personal = [
        ModelVars(
            jax.tree_util.tree_map_with_path(
                lambda path, leaf, norm=norm: norm[path_name(path)] if is_norm(path) else leaf, w_g
            ),
            state,
        )
        for norm, state in clients
    ]
    return (w_g, s_g), clients, personal


@pytest.mark.parametrize(("per_round", "chunk"), [(2, 1)])
def test_fedbn_matches_python_loop(toy, per_round, chunk):
    fed, model, init = toy
    algorithm = fedbn(model, optax.sgd(LR))
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    (w_g, s_g), clients, personal = fedbn_reference(model, fed, init, per_round)

    assert_close(server.model.params, w_g)
    assert_close(server.model.state, s_g)
    for row, (norm, state) in zip(rows, clients, strict=True):
        assert sorted(row.norm) == sorted(norm)
        assert_close(row.norm, norm)
        assert_close(row.state, state)
    assert_deployed(algorithm, server, rows, fed, personal)
    # personal normalisation: the clients that trained differ from each other
    scales = [np.asarray(row.norm["BatchNorm_0/scale"]) for row in rows]
    assert np.ptp(np.stack(scales), axis=0).max() > 0


# -------------------------------------------------------------------------------------- Ditto

LAM = 0.5


def ditto_reference(model, fed, init, per_round):
    """Ditto (Li et al. 2021, Algorithm 1): the global model by FedAvg (weighted by ``n_k``); each
    sampled client also runs the same local schedule on its personal ``v_k`` with gradient
    ``grad F_k(v_k) + lambda (v_k - w^t)``, ``w^t`` the global model it received. Returns the
    personal models (None for a client never sampled)."""
    w_g, s_g = f64(init.params), f64(init.state)
    start = ModelVars(w_g, s_g)
    clients = [None] * NUM_CLIENTS
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            batches = local_batches(fed, r, c, per_round)
            w, s = sgd(model, fed, w_g, s_g, batches)
            v, vs = sgd(model, fed, *(clients[c] or start), batches, prox=(LAM, w_g))
            clients[c] = ModelVars(v, vs)
            trained.append(w)
            states.append(s)
            weights.append(float(fed.num_examples[c]))
        w_g, s_g = weighted_mean(trained, weights), weighted_mean(states, weights)
    return (w_g, s_g), clients


@pytest.mark.parametrize(("per_round", "chunk"), [(1, 1), (2, 2)])
def test_ditto_matches_python_loop(toy, per_round, chunk):
    fed, model, init = toy
    algorithm = ditto(model, optax.sgd(LR), lam=LAM)
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)
    (w_g, s_g), clients = ditto_reference(model, fed, init, per_round)

    assert_close(server.model.params, w_g)
    assert_close(server.model.state, s_g)
    assert (None in clients) == (per_round == 1)  # never sampled: it deploys the global model
    for row, want in zip(rows, clients, strict=True):
        assert bool(row.trained) == (want is not None)
        assert_close(row.model, want or init)
    assert_deployed(algorithm, server, rows, fed, [want or ModelVars(w_g, s_g) for want in clients])


# -------------------------------------------------------------------------- FedAvg + fine-tune


def test_fedavg_ft_matches_python_loop(toy):
    """FedAvg (weighted by ``n_k``) for the server; every client deploys the server model fine-tuned
    by SGD on its own training data for the evaluator's schedule (key ``fold_in(key, client)``)."""
    fed, model, init = toy
    per_round, chunk = 3, 2  # two chunks, the second with a padding slot
    algorithm = fedavg_ft(model, optax.sgd(LR))
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)

    w_g, s_g = f64(init.params), f64(init.state)
    for r in range(ROUNDS):
        trained, states, weights = [], [], []
        for c in sampled_clients(fed, r, per_round):
            w, s = sgd(model, fed, w_g, s_g, local_batches(fed, r, c, per_round))
            trained.append(w)
            states.append(s)
            weights.append(float(fed.num_examples[c]))
        w_g, s_g = weighted_mean(trained, weights), weighted_mean(states, weights)

    assert_close(server.model.params, w_g)
    assert_close(server.model.state, s_g)
    assert all(jax.tree.leaves(row) == [] for row in rows)  # no persistent client state
    tuned = [
        ModelVars(*sgd(model, fed, w_g, s_g, real_batches(fed, fold_in(c), c, FT_EPOCHS)))
        for c in range(NUM_CLIENTS)
    ]
    assert_deployed(algorithm, server, rows, fed, tuned)
    assert not np.allclose(tuned[0].params["Dense_1"]["kernel"], w_g["Dense_1"]["kernel"])


# --------------------------------------------------------------------------------- local-only


def test_local_only_matches_python_loop(toy):
    """Each sampled client trains its own model from the shared initialisation; the server keeps the
    initialisation; clients that were not sampled keep theirs."""
    fed, model, init = toy
    per_round, chunk = 2, 1
    algorithm = local_only(model, optax.sgd(LR))
    server, rows = run_engine(algorithm, fed, init, per_round, chunk)

    clients = [ModelVars(f64(init.params), f64(init.state)) for _ in range(NUM_CLIENTS)]
    for r in range(ROUNDS):
        for c in sampled_clients(fed, r, per_round):
            clients[c] = ModelVars(
                *sgd(model, fed, *clients[c], local_batches(fed, r, c, per_round))
            )

    assert_close(server.model, f64(init))
    for row, want in zip(rows, clients, strict=True):
        assert_close(row, want)
    assert_deployed(algorithm, server, rows, fed, clients)
