"""A round of 1,000 clients runs on CPU in chunks, and its working memory is set by the chunk size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.task import Federation
from fedsim.engine.round import build_round_fn
from fedsim.models import get_model


def federation(num_clients, per_client=8):
    rng = np.random.default_rng(0)
    n = num_clients * per_client
    x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    table = np.arange(n, dtype=np.int32).reshape(num_clients, per_client)
    sizes = np.full(num_clients, per_client, np.int32)
    return Federation(*map(jnp.asarray, (x, y, table, sizes)))


def compiled_round(num_clients, clients_per_round, chunk_size):
    model = get_model("mlp", 10, hidden=(32,))
    algorithm = fedavg(model, optax.sgd(0.1))
    server = algorithm.server_init(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1))))
    round_fn = build_round_fn(
        algorithm, num_clients=num_clients, clients_per_round=clients_per_round,
        chunk_size=chunk_size, local_epochs=1, batch_size=4,
    )  # fmt: skip
    fed = federation(num_clients)
    args = (server, (), fed, jnp.int32(0), jax.random.PRNGKey(1))
    return jax.jit(round_fn).lower(*args).compile(), args


def test_thousand_clients_in_chunks():
    compiled, args = compiled_round(1000, 1000, 50)
    server, _, metrics = compiled(*args)
    assert metrics.client_ids.shape == (1000,)
    assert len(np.unique(np.asarray(metrics.client_ids))) == 1000
    assert not np.asarray(metrics.failed).any()
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(server.model.params))


def test_working_memory_set_by_chunk_not_clients():
    def temp_bytes(k, chunk):
        return compiled_round(1000, k, chunk)[0].memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(100, 50), temp_bytes(1000, 50)
    per_client_outputs = 1000 * 6 * 4  # the [K] metrics vectors, a few int32/float32 each
    assert large - small <= per_client_outputs
    assert temp_bytes(1000, 200) > large  # a bigger chunk does cost more
