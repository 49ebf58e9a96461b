"""A client whose update is non-finite is excluded and counted; the server model stays finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.algorithms import scaffold
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.task import Federation
from fedsim.engine.round import build_round_fn
from fedsim.models import get_model

SIZES = np.array([6, 6, 6, 6], np.int32)


def toy_federation(poisoned=(), sizes=SIZES):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 3, 1)).astype(np.float32)
    y = rng.integers(0, 3, 24).astype(np.int32)
    table = np.arange(24, dtype=np.int32).reshape(4, 6)
    for c in poisoned:
        x[table[c, 0]] = np.nan
    return Federation(*map(jnp.asarray, (x, y, table, sizes)))


def run_round(algorithm, model_vars, fed, chunk_size):
    server = algorithm.server_init(model_vars)
    clients = jax.tree.map(lambda a: jnp.stack([a] * 4), algorithm.client_init(model_vars))
    round_fn = build_round_fn(
        algorithm, num_clients=4, clients_per_round=4, chunk_size=chunk_size,
        local_epochs=1, batch_size=3,
    )  # fmt: skip
    return jax.jit(round_fn)(server, clients, fed, jnp.int32(0), jax.random.PRNGKey(0))


def test_nan_client_excluded_and_counted():
    model = get_model("mlp", 3, hidden=(4,))
    mv = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 1)))
    algorithm = fedavg(model, optax.sgd(0.1))
    for chunk_size in (1, 2, 4):
        server, _, metrics = run_round(algorithm, mv, toy_federation(poisoned=[2]), chunk_size)
        failed = dict(zip(np.asarray(metrics.client_ids), np.asarray(metrics.failed), strict=True))
        assert failed == {0: False, 1: False, 2: True, 3: False}
        leaves = jax.tree.leaves(server.model.params)
        assert all(np.isfinite(leaf).all() for leaf in leaves)
    # Excluding client 2 equals the clean federation in which client 2 has no examples (weight 0,
    # no steps): the example-weighted mean over clients 0, 1 and 3 alone.
    without = toy_federation(sizes=np.array([6, 6, 0, 6], np.int32))
    expected, _, _ = run_round(algorithm, mv, without, 4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        server.model.params,
        expected.model.params,
    )


def test_all_clients_failing_keeps_server_and_client_state():
    model = get_model("mlp", 3, hidden=(4,))
    mv = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 1)))
    algorithm = scaffold.scaffold(model, 0.1, num_clients=4)
    server, clients, metrics = run_round(algorithm, mv, toy_federation(poisoned=[0, 1, 2, 3]), 2)
    assert np.asarray(metrics.failed).all()
    jax.tree.map(np.testing.assert_array_equal, server.model.params, mv.params)
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(clients))
