"""The vmapped, chunked engine equals a plain per-client Python loop (hand-written SGD and server
steps, numpy arithmetic) on three toy clients of different sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsim.algorithms import fedavg, fedopt, fedprox, scaffold
from fedsim.algorithms.spec import lr_schedule
from fedsim.data.batching import client_batches
from fedsim.engine.round import build_round_fn

NUM_CLIENTS, EPOCHS, BATCH, LR, ROUNDS = 3, 2, 4, 0.1, 2
SIZES = np.array([5, 12, 9], np.int32)
KEY = jax.random.PRNGKey(7)


def to_np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def real_batches(fed, key, client, epochs=EPOCHS):
    """Client ``client``'s real batches, in order, of the task built under ``key`` (the key that
    ``fedsim.algorithms.task.client_task`` receives)."""
    batch_key, _ = jax.random.split(key)
    idx, valid = client_batches(
        batch_key,
        fed.client_indices[client],
        fed.num_examples[client],
        epochs=epochs,
        batch_size=BATCH,
    )
    idx, valid = np.asarray(idx), np.asarray(valid)
    return [row[ok] for row, ok in zip(idx, valid, strict=True) if ok.any()]


def client_schedule(fed, round_index, client_id, clients_per_round, *, key=KEY, epochs=EPOCHS):
    """The documented schedule: sampled ids and each client's real batches, in order."""
    sample_key, client_key = jax.random.split(jax.random.fold_in(key, round_index))
    sampled = np.asarray(
        jax.random.choice(sample_key, NUM_CLIENTS, (clients_per_round,), replace=False)
    )
    return sampled, real_batches(fed, jax.random.fold_in(client_key, client_id), client_id, epochs)


def grad_at(model, fed, params, batch):
    def loss(p):
        logits, _ = model.apply(type(model.init(KEY, fed.x[:1]))(p, {}), fed.x[batch], True, KEY)
        return optax.softmax_cross_entropy_with_integer_labels(logits, fed.y[batch]).mean()

    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    return to_np(jax.grad(loss)(p32))


def reference_local(model, fed, start, batches, correction=None):
    """Plain SGD; ``correction(params) -> tree`` is added to each gradient."""
    params = start
    for batch in batches:
        g = grad_at(model, fed, params, batch)
        if correction is not None:
            g = jax.tree.map(np.add, g, correction(params))
        params = jax.tree.map(lambda p, gi: p - LR * gi, params, g)
    return params


def run_engine(
    algorithm, fed, model_vars, clients_per_round, chunk_size, rounds=ROUNDS, **round_kwargs
):
    """``rounds`` rounds of ``build_round_fn`` (``round_kwargs``: e.g. its ``faults``)."""
    server = algorithm.server_init(model_vars)
    clients = jax.tree.map(
        lambda a: jnp.stack([a] * NUM_CLIENTS), algorithm.client_init(model_vars)
    )
    round_fn = build_round_fn(
        algorithm,
        num_clients=NUM_CLIENTS,
        clients_per_round=clients_per_round,
        chunk_size=chunk_size,
        local_epochs=EPOCHS,
        batch_size=BATCH,
        **round_kwargs,
    )
    # XLA's lowest backend optimisation level: compiling dominates these tests (about 40 % faster)
    round_fn = (
        jax.jit(round_fn)
        .lower(server, clients, fed, jnp.int32(0), KEY)
        .compile({"xla_backend_optimization_level": 0})
    )
    for r in range(rounds):
        server, clients, _ = round_fn(server, clients, fed, jnp.int32(r), KEY)
    return server, clients


def assert_close(actual, expected):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6),
        actual,
        expected,
    )


def reference_fedavg(model, fed, model_vars, clients_per_round, mu=0.0, server=None):
    """FedAvg/FedProx weighted by examples; ``server(w, mean_delta, r)`` defaults to w + delta."""
    w = to_np(model_vars.params)
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, clients_per_round)
        deltas, weights = [], []
        for c in sampled:
            _, batches = client_schedule(fed, r, int(c), clients_per_round)
            prox = (lambda p, w=w: jax.tree.map(lambda a, b: mu * (a - b), p, w)) if mu else None
            local = reference_local(model, fed, w, batches, prox)
            deltas.append(jax.tree.map(np.subtract, local, w))
            weights.append(float(SIZES[c]))
        mean = jax.tree.map(
            lambda *d, ws=tuple(weights): (
                sum(wi * di for wi, di in zip(ws, d, strict=True)) / sum(ws)
            ),
            *deltas,
        )
        w = server(w, mean, r) if server else jax.tree.map(np.add, w, mean)
    return w


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_fedavg_equals_reference(toy, chunk_size):
    fed, model, mv = toy
    server, _ = run_engine(fedavg.fedavg(model, optax.sgd(LR)), fed, mv, 3, chunk_size)
    assert_close(server.model.params, reference_fedavg(model, fed, mv, 3))


def test_fedavg_partial_participation_equals_reference(toy):
    fed, model, mv = toy
    server, _ = run_engine(fedavg.fedavg(model, optax.sgd(LR)), fed, mv, 2, 2)
    assert_close(server.model.params, reference_fedavg(model, fed, mv, 2))


def test_fedprox_equals_reference(toy):
    fed, model, mv = toy
    server, _ = run_engine(fedprox.fedprox(model, optax.sgd(LR), mu=0.5), fed, mv, 3, 2)
    assert_close(server.model.params, reference_fedavg(model, fed, mv, 3, mu=0.5))


def test_fedadam_equals_reference(toy):
    fed, model, mv = toy
    lr, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    moments = {}

    def adam_server(w, delta, r):
        if not moments:
            moments["m"] = jax.tree.map(np.zeros_like, w)
            moments["v"] = jax.tree.map(lambda a: np.full_like(a, tau**2), w)
        moments["m"] = jax.tree.map(lambda m, d: b1 * m + (1 - b1) * d, moments["m"], delta)
        moments["v"] = jax.tree.map(lambda v, d: b2 * v + (1 - b2) * d * d, moments["v"], delta)
        return jax.tree.map(
            lambda p, m, v: p + lr * m / (np.sqrt(v) + tau), w, moments["m"], moments["v"]
        )

    algorithm = fedopt.fedadam(model, optax.sgd(LR), server_lr=lr, b1=b1, b2=b2, tau=tau)
    server, _ = run_engine(algorithm, fed, mv, 3, 2)
    assert_close(server.model.params, reference_fedavg(model, fed, mv, 3, server=adam_server))


@pytest.mark.parametrize("clients_per_round", [3, 2])
def test_scaffold_equals_reference(toy, clients_per_round):
    fed, model, mv = toy
    w = to_np(mv.params)
    zeros = jax.tree.map(np.zeros_like, w)
    c, ck = zeros, [zeros] * NUM_CLIENTS
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, clients_per_round)
        dys, dcs = [], []
        for k in map(int, sampled):
            _, batches = client_schedule(fed, r, k, clients_per_round)
            corr = lambda p, ck_k=ck[k], c=c: jax.tree.map(lambda a, b: b - a, ck_k, c)
            y = reference_local(model, fed, w, batches, corr)
            steps = len(batches)
            new_ck = jax.tree.map(
                lambda a, b, wi, yi, s=steps: a - b + (wi - yi) / (s * LR), ck[k], c, w, y
            )
            dys.append(jax.tree.map(np.subtract, y, w))
            dcs.append(jax.tree.map(np.subtract, new_ck, ck[k]))
            ck[k] = new_ck
        w = jax.tree.map(lambda wi, *d: wi + sum(d) / len(d), w, *dys)
        c = jax.tree.map(lambda ci, *d: ci + sum(d) / NUM_CLIENTS, c, *dcs)

    server, clients = run_engine(
        scaffold.scaffold(model, LR, NUM_CLIENTS), fed, mv, clients_per_round, 2
    )
    assert_close(server.model.params, w)
    assert_close(server.control, c)
    for k in range(NUM_CLIENTS):
        assert_close(jax.tree.map(lambda a, k=k: a[k], clients), ck[k])


def test_fedavgm_without_momentum_is_fedavg(toy):
    fed, model, mv = toy
    plain, _ = run_engine(fedavg.fedavg(model, optax.sgd(LR)), fed, mv, 3, 3)
    avgm, _ = run_engine(fedopt.fedavgm(model, optax.sgd(LR), 1.0, momentum=0.0), fed, mv, 3, 3)
    assert_close(avgm.model.params, to_np(plain.model.params))


def test_fedavg_keeping_client_optimizer_state_equals_reference(toy):
    """Each client's momentum and learning-rate schedule step carry on across rounds (its client
    state), with coupled weight decay: a hand-written heavy-ball loop that never restarts them."""
    fed, model, mv = toy
    beta, decay, total = 0.9, 0.01, 8  # client 0 takes 4 steps a round: both lr drops in round 2
    optimizer = optax.sgd(lr_schedule("step", LR, total), momentum=beta)
    algorithm = fedavg.fedavg(model, optimizer, weight_decay=decay, keep_optimizer_state=True)
    server, _ = run_engine(algorithm, fed, mv, 3, 2)
    w = to_np(mv.params)
    traces, steps = [jax.tree.map(np.zeros_like, w)] * NUM_CLIENTS, [0] * NUM_CLIENTS
    for r in range(ROUNDS):
        deltas = []
        for c in range(NUM_CLIENTS):
            p = w
            for batch in client_schedule(fed, r, c, 3)[1]:
                g = jax.tree.map(lambda a, b: a + decay * b, grad_at(model, fed, p, batch), p)
                traces[c] = jax.tree.map(lambda t, gi: gi + beta * t, traces[c], g)
                lr = LR * 0.1 ** ((steps[c] >= total // 2) + (steps[c] >= 3 * total // 4))
                p = jax.tree.map(lambda a, t, lr=lr: a - lr * t, p, traces[c])
                steps[c] += 1
            deltas.append(jax.tree.map(lambda a, b, n=float(SIZES[c]): n * (a - b), p, w))
        w = jax.tree.map(lambda wi, *d: wi + sum(d) / float(SIZES.sum()), w, *deltas)
    assert steps == [8, 12, 12]
    assert_close(server.model.params, w)


def test_step_schedule_drops_at_half_and_three_quarters():
    schedule = lr_schedule("step", 1.0, 8)
    np.testing.assert_allclose(
        [schedule(t) for t in range(8)], [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6
    )
    assert lr_schedule("constant", 0.3, 8) == 0.3
