"""FedBuff (Nguyen et al. 2022): the vmapped engine equals a plain per-client event loop that replays
the same latency draws on three toy clients (arrivals, staleness, time-outs, server model and
simulated clock); updates weigh 1/sqrt(1 + staleness); the round traces once; it runs from the CLI
(in half FedAvg's simulated time when every job takes as long), as a vmapped sweep and sharded; the
comparison config builds and its table counts rounds and simulated time to the target."""

import json
import runpy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_engine_reference import (
    BATCH,
    EPOCHS,
    KEY,
    LR,
    NUM_CLIENTS,
    assert_close,
    client_schedule,
    reference_local,
    to_np,
)
from test_faults import documented_durations
from test_grid import run_sweep_cells
from test_sharding import final_state
from test_traces import round_and_state, smoke_config

from fedsim import config as config_lib
from fedsim.algorithms.base import Dataset
from fedsim.algorithms.fedbuff import fedbuff
from fedsim.algorithms.task import client_task
from fedsim.cli import main
from fedsim.engine import setup
from fedsim.engine.faults import Faults
from fedsim.engine.round import build_round_fn
from fedsim.errors import ConfigError

LATENCY = Faults(
    latency_sigma=1.0, latency_jitter=0.5, straggler_fraction=1 / 3, straggler_work=1.0,
    straggler_slowdown=3.0,
)  # fmt: skip
SERVER_LR, EXPONENT = 0.7, 0.5


def durations(round_index):
    """The documented job durations of round ``round_index`` under ``LATENCY``."""
    return documented_durations(LATENCY, KEY, round_index, NUM_CLIENTS)


def idle_draws(round_index):
    """The uniform draws that order idle clients for new jobs (the round's sampling key)."""
    sample_key, _ = jax.random.split(jax.random.fold_in(KEY, round_index))
    return np.asarray(jax.random.uniform(sample_key, (NUM_CLIENTS,)))


def reference_fedbuff(model, fed, init, *, buffer, concurrency, max_staleness, rounds):
    """An event loop over jobs ``{client: (version, finish)}``: per server step, time out jobs whose
    model is older than ``max_staleness``, start jobs on idle clients (lowest draw first) up to
    ``concurrency``, take the ``buffer`` earliest finishers, step the server with the mean of their
    staleness-weighted deltas. Returns the model and per step: the arrivals, their staleness, the
    clock's advance and the jobs timed out."""
    models = [to_np(init.params)]
    jobs, arrived, clock, log = {}, [], 0.0, []
    for t in range(rounds):
        jobs = {c: job for c, job in jobs.items() if c not in arrived}
        timed_out = [c for c, (version, _) in jobs.items() if version < t - max_staleness]
        jobs = {c: job for c, job in jobs.items() if c not in timed_out}
        took = durations(t)
        draws = idle_draws(t)
        idle = sorted((c for c in range(NUM_CLIENTS) if c not in jobs), key=lambda c: draws[c])
        for c in idle[: concurrency - len(jobs)]:
            jobs[c] = (t, clock + took[c])
        arrived = sorted(jobs, key=lambda c: (jobs[c][1], c))[:buffer]
        previous, clock = clock, max(jobs[c][1] for c in arrived)
        deltas = []
        for c in arrived:
            start = models[jobs[c][0]]
            _, batches = client_schedule(fed, t, c, buffer)
            local = reference_local(model, fed, start, batches)
            weight = (1 + t - jobs[c][0]) ** -EXPONENT
            deltas.append(jax.tree.map(lambda a, b, w=weight: w * (a - b), local, start))
        mean = jax.tree.map(lambda *d: sum(d) / len(d), *deltas)
        models.append(jax.tree.map(lambda w, d: w + SERVER_LR * d, models[-1], mean))
        log.append((arrived, [t - jobs[c][0] for c in arrived], clock - previous, timed_out))
    return models[-1], log


def run_rounds(algorithm, fed, init, buffer, chunk_size, rounds):
    """``rounds`` rounds of the engine under ``LATENCY``; the server state and every round's
    metrics."""
    server = algorithm.server_init(init)
    round_fn = build_round_fn(
        algorithm, num_clients=NUM_CLIENTS, clients_per_round=buffer, chunk_size=chunk_size,
        local_epochs=EPOCHS, batch_size=BATCH, faults=LATENCY,
    )  # fmt: skip
    round_fn = jax.jit(round_fn)
    metrics = []
    for r in range(rounds):
        server, _, m = round_fn(server, (), fed, jnp.int32(r), KEY)
        metrics.append(jax.device_get(m))
    return server, metrics


@pytest.mark.parametrize(
    ("buffer", "concurrency", "max_staleness", "chunk_size"), [(1, 2, 1, 1), (2, 3, 2, 2)]
)
def test_fedbuff_equals_the_event_loop(toy, buffer, concurrency, max_staleness, chunk_size):
    fed, model, init = toy
    server_opt = optax.sgd(SERVER_LR)
    algorithm = fedbuff(
        model, optax.sgd(LR), NUM_CLIENTS, buffer, concurrency, max_staleness, server_opt, EXPONENT
    )
    rounds = 6
    server, metrics = run_rounds(algorithm, fed, init, buffer, chunk_size, rounds)
    w, log = reference_fedbuff(
        model, fed, init, buffer=buffer, concurrency=concurrency, max_staleness=max_staleness,
        rounds=rounds,
    )  # fmt: skip
    for m, (arrived, _, advance, _) in zip(metrics, log, strict=True):
        assert m.client_ids.tolist() == arrived
        assert float(m.sim_time) == pytest.approx(advance, rel=1e-5, abs=1e-6)
    assert_close(server.model.params, w)
    assert max(s for _, stale, _, _ in log for s in stale) > 0  # some updates were stale
    assert any(timed_out for *_, timed_out in log)  # and a slow job timed out


def test_a_stale_update_weighs_one_over_sqrt_one_plus_staleness(toy):
    fed, model, init = toy
    task = client_task(fed, 1, KEY, epochs=EPOCHS, batch_size=BATCH)

    def sent(exponent, staleness):
        """Client 1's upload when it started from w_0 and the server is at step ``staleness``
        (its ring still holds w_0, so only the weight depends on the staleness)."""
        algorithm = fedbuff(model, optax.sgd(LR), NUM_CLIENTS, 1, 2, 3, staleness_exponent=exponent)
        state = algorithm.server_init(init)
        jobs = state.jobs._replace(version=state.jobs.version.at[1].set(0))
        state = state._replace(jobs=jobs, step=jnp.int32(staleness))
        return algorithm.client_update(state, (), task, Dataset(fed.x, fed.y)).contribution.delta

    for staleness in (0, 2):
        plain, weighted = sent(0.0, staleness), sent(0.5, staleness)
        scaled = jax.tree.map(lambda d, s=staleness: np.asarray(d) / np.sqrt(1 + s), plain)
        assert_close(weighted, scaled)


def test_fedbuff_round_is_traced_once_with_latencies():
    config = smoke_config(algorithm="fedbuff", latency_sigma=1.0, latency_jitter=0.3)
    round_fn, server, clients, federation = round_and_state(config)
    round_fn = jax.jit(chex.assert_max_traces(round_fn, n=1))
    for r in range(4):
        server, clients, metrics = round_fn(
            server, clients, federation, jnp.int32(r), jax.random.PRNGKey(0)
        )
    assert int(server.step) == 4 and float(server.clock) > 0
    chex.clear_trace_counter()


def test_fedbuff_runs_from_the_cli_in_half_the_simulated_time(tmp_path):
    def sim_times(algorithm):
        workdir = tmp_path / algorithm
        argv = ["run", "--config=configs/fedavg.py:smoke", f"--config.algorithm={algorithm}"]
        assert main([*argv, f"--workdir={workdir}"]) == 0
        rows = (workdir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(row)["sim_time"] for row in rows]

    # every job takes 1: FedAvg's rounds take 1 each; FedBuff's 2K jobs end together, two flushes
    assert sim_times("fedavg") == [1.0, 2.0]
    assert sim_times("fedbuff") == [1.0, 1.0]


def test_fedbuff_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = '[{"algorithm": "fedbuff", "fedbuff.staleness_exponent": a} for a in (0.0, 2.0)]'
    cells = run_sweep_cells(tmp_path, cells)
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]


def test_sharded_fedbuff_equals_single_device():
    config = dict(algorithm="fedbuff", clients_per_round=5, latency_sigma=1.0)
    one, one_state = final_state(smoke_config(devices=1, **config))
    eight, eight_state = final_state(smoke_config(devices=8, **config))
    assert eight["sim_time"] == pytest.approx(one["sim_time"], rel=1e-6)
    assert eight["global_acc"] == pytest.approx(one["global_acc"], abs=1e-6)
    states = lambda s: jax.tree.leaves(s.server_state)
    for a, b in zip(states(one_state), states(eight_state), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fedbuff.concurrency": 2}, r"fedbuff.concurrency=2 must lie in \[clients_per_round=3"),
        ({"fedbuff.concurrency": 7}, r"fedbuff.concurrency=7 must lie in .*num_clients=6\]"),
        ({"client_sampling": "poisson"}, "schedules its own clients"),
        ({"dp_clip": 1.0}, "under DP: it schedules its own clients"),
        ({"latency_sigma": -1.0}, "latency_sigma=-1.0 must be >= 0"),
        ({"straggler_slowdown": 0.5}, "straggler_slowdown=0.5 must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        setup.build_experiment(smoke_config(algorithm="fedbuff", **overrides))
    assert len(str(err.value).splitlines()) == 1


def test_the_comparison_config_builds_and_tabulates_time_to_target(tmp_path):
    module = config_lib.config_module("configs/fedbuff.py")
    for cell in module.get_sweep()[:: len(module.SEEDS)]:
        setup.build_experiment(config_lib.with_overrides(module.get_config(), cell))
    seeds = {  # (round, global_acc, sim_time) per evaluation; seed 2 never reaches 0.9
        0: [(2, 0.5, 1.5), (4, 0.92, 3.0), (6, 0.95, 4.5)],
        1: [(2, 0.91, 1.0), (4, 0.93, 2.0), (6, 0.97, 3.0)],
        2: [(2, 0.5, 1.0), (4, 0.6, 2.0), (6, 0.7, 3.0)],
    }
    for seed, rows in seeds.items():
        run = tmp_path / f"algorithm=fedbuff-seed={seed}-data_seed=0"
        run.mkdir()
        lines = [{"round": r, "global_acc": a, "sim_time": t} for r, a, t in rows]
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = runpy.run_path("results/fedbuff_table.py")["table"](tmp_path, 0.9)
    row = (
        "| algorithm=fedbuff-data_seed=0 | 3 | 2 | 3 ± 1.4 | 2 ± 1.4 | 0.8733 ± 0.15 | 3.5 ± 0.87 |"
    )
    assert row in table, table
