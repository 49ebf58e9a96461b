"""Simulated faults: dropout renormalises over survivors, stragglers do part of their work, a
synchronous round lasts as long as its slowest client, and a federation with poisoned (NaN) clients
trains as well as one without them and reports them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.task import Federation
from fedsim.config import base_config
from fedsim.engine import faults, loop, setup
from fedsim.engine.round import build_round_fn
from fedsim.models import get_model

SIZES = np.array([7, 9, 5, 8, 6, 9], np.int32)


def federation(sizes=SIZES):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(54, 3, 3, 1)).astype(np.float32)
    y = rng.integers(0, 3, 54).astype(np.int32)
    table = np.arange(54, dtype=np.int32).reshape(6, 9)
    return Federation(*map(jnp.asarray, (x, y, table, sizes)))


def one_round(fed, fault_model=faults.NO_FAULTS, chunk_size=3):
    model = get_model("mlp", 3, hidden=(4,))
    algorithm = fedavg(model, optax.sgd(0.1))
    server = algorithm.server_init(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 1))))
    round_fn = build_round_fn(
        algorithm, num_clients=6, clients_per_round=6, chunk_size=chunk_size,
        local_epochs=2, batch_size=2, faults=fault_model,
    )  # fmt: skip
    return jax.jit(round_fn)(server, (), fed, jnp.int32(0), jax.random.PRNGKey(3))


def assert_trees_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def test_dropout_renormalises_over_survivors():
    server, _, metrics = one_round(federation(), faults.Faults(dropout_prob=0.5))
    dropped = np.asarray(metrics.dropped)
    assert 0 < dropped.sum() < 6
    np.testing.assert_array_equal(np.asarray(metrics.failed), dropped)
    assert (np.asarray(metrics.up_bytes)[dropped] == 0).all()
    assert (np.asarray(metrics.down_bytes) > 0).all()
    # dropped clients weigh nothing: the same as those clients having no examples at all
    sizes = SIZES.copy()
    sizes[np.asarray(metrics.client_ids)[dropped]] = 0
    expected, _, _ = one_round(federation(sizes))
    assert_trees_close(server.model.params, expected.model.params)


def test_truncate_work_keeps_the_first_real_steps():
    mask = np.zeros((8, 2), bool)
    mask[[0, 1, 2, 4, 5, 6], 0] = True  # 6 real steps over two epochs
    cut = np.asarray(faults.truncate_work(jnp.asarray(mask), 0.5))
    assert cut.any(axis=1).tolist() == [True, True, True] + [False] * 5
    assert np.asarray(faults.truncate_work(jnp.asarray(mask), 0.01)).any(axis=1).sum() == 1


def test_stragglers_are_a_fixed_fraction_and_do_less():
    key = jax.random.PRNGKey(5)
    flags = [bool(faults.is_straggler(key, c, 10, 0.3)) for c in range(10)]
    assert sum(flags) == 3
    full, _, m_full = one_round(federation())
    slow, _, m_slow = one_round(
        federation(), faults.Faults(straggler_fraction=1.0, straggler_work=0.5)
    )
    assert not np.asarray(m_slow.failed).any()
    moved = lambda s: sum(float(jnp.abs(a).sum()) for a in jax.tree.leaves(s.model.params))
    assert moved(slow) != pytest.approx(moved(full))


def documented_durations(fault_model, key, round_index, num_clients):
    """Round ``round_index``'s job durations as documented: each client's fixed log-normal typical
    time (``fold_in(fixed, 1)``), the job's jitter (``fold_in(round key, 1)``), the stragglers'
    slowdown (the straggler set of ``fixed``)."""
    fixed = jax.random.split(key)[1]
    typical = np.asarray(jax.random.normal(jax.random.fold_in(fixed, 1), (num_clients,)))
    round_key = jax.random.fold_in(key, round_index)
    jitter = np.asarray(jax.random.normal(jax.random.fold_in(round_key, 1), (num_clients,)))
    ranks = np.asarray(jax.random.permutation(fixed, num_clients))
    stragglers = ranks < round(fault_model.straggler_fraction * num_clients)
    slow = np.where(stragglers, fault_model.straggler_slowdown * fault_model.straggler_work, 1.0)
    spread = fault_model.latency_sigma * typical + fault_model.latency_jitter * jitter
    return np.exp(spread) * slow


def test_a_synchronous_round_lasts_as_long_as_its_slowest_sampled_client():
    latency = faults.Faults(
        latency_sigma=1.0, latency_jitter=0.5, straggler_fraction=0.5, straggler_work=1.0,
        straggler_slowdown=4.0,
    )  # fmt: skip
    model = get_model("mlp", 3, hidden=(4,))
    algorithm = fedavg(model, optax.sgd(0.1))
    server = algorithm.server_init(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 1))))
    round_fn = build_round_fn(
        algorithm, num_clients=6, clients_per_round=3, chunk_size=3, local_epochs=1,
        batch_size=2, faults=latency,
    )  # fmt: skip
    key = jax.random.PRNGKey(3)
    for r in range(2):
        server, _, m = jax.jit(round_fn)(server, (), federation(), jnp.int32(r), key)
        took = documented_durations(latency, key, r, 6)[np.asarray(m.client_ids)]
        assert float(m.sim_time) == pytest.approx(took.max(), rel=1e-6)
    _, _, m = one_round(federation())  # without latencies every job takes 1
    assert float(m.sim_time) == 1.0


def test_poisoned_clients_are_excluded_and_accuracy_holds():
    def run(poison):
        config = base_config()
        config.update(
            dataset="digits", model="mlp", partition="iid", num_clients=20, clients_per_round=10,
            rounds=15, local_epochs=2, batch_size=16, client_lr=0.1, eval_every=15,
            poison_fraction=poison,
        )  # fmt: skip
        config.model_kwargs = {"hidden": (32,)}
        experiment = setup.build_experiment(config)
        records = list(loop.run(experiment))
        return experiment, records[-1]

    _, clean = run(0.0)
    poisoned, last = run(0.2)
    clean_metrics, metrics = clean.metrics, last.metrics
    assert len(poisoned.poisoned_clients) == 4
    assert last.summaries[0]["poisoned_clients"] == sorted(poisoned.poisoned_clients.tolist())
    assert metrics["clients_failed_total"] > 0
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(last.state(0).server_state))
    assert clean_metrics["global_acc"] > 0.85
    assert metrics["global_acc"] == pytest.approx(clean_metrics["global_acc"], abs=0.03)
