"""The round function is traced once for a whole experiment, for every algorithm."""

import chex
import jax
import jax.numpy as jnp
import pytest

from fedsim import config as config_lib
from fedsim.algorithms import ALGORITHMS
from fedsim.compress import lowrank
from fedsim.engine import loop, programs, setup
from fedsim.engine.round import build_round_fn


def smoke_config(**overrides):
    """A seconds-long MLP config; ``overrides`` may use dotted keys (``fedltn.prune_rate``)."""
    config = config_lib.base_config()
    config.update(
        dataset="digits", model="mlp", num_clients=6, clients_per_round=3, rounds=4,
        local_epochs=1, batch_size=16, eval_every=2, chunk_size=2,
    )  # fmt: skip
    config.model_kwargs = {"hidden": (8,)}
    for key, value in overrides.items():
        config_lib.set_value(config, key, value)
    return config


def run_all(config):
    """``(experiment, records)`` of ``config`` run in memory; the summary is
    ``records[-1].summaries[0]``."""
    experiment = setup.build_experiment(config)
    return experiment, list(loop.run(experiment))


def round_and_state(config):
    """The experiment's own round function, initial states and federation."""
    experiment = setup.build_experiment(config)
    algorithm = setup.programs(experiment).algorithm
    server, clients = setup.init_states(experiment, algorithm)
    round_fn = setup.programs(experiment).round_fn
    return round_fn, server, clients, setup.federation(experiment)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_traced_once_over_rounds(algorithm):
    config = smoke_config(algorithm=algorithm, val_fraction=0.2)
    if algorithm == "maestro":  # ranks shrink every round, still one trace
        config.maestro.update(lambda_gl=0.05, epsilon_ps=0.5, rank_tiers=(0.5, 1.0))
        config.model_kwargs.factorized = True
    if algorithm == "fedbn":  # it needs normalisation layers
        config.model, config.model_kwargs = "bn_cnn", {"width": 4}
    round_fn, server, clients, federation = round_and_state(config)
    round_fn = jax.jit(chex.assert_max_traces(round_fn, n=1))
    key = jax.random.PRNGKey(0)
    ranks = [lowrank.rank_vector(server.model.state).tolist()] if algorithm == "maestro" else []
    for r in range(4):
        server, clients, metrics = round_fn(server, clients, federation, jnp.int32(r), key)
        if algorithm == "maestro":
            ranks.append(lowrank.rank_vector(server.model.state).tolist())
    assert metrics.loss.shape == (3,)
    if algorithm == "maestro":
        assert sum(ranks[-1]) < sum(ranks[0]), ranks
    chex.clear_trace_counter()


def test_driver_traces_round_once(monkeypatch, tmp_path):
    counted = lambda algorithm, **kw: chex.assert_max_traces(build_round_fn(algorithm, **kw), n=1)
    monkeypatch.setattr(programs, "build_round_fn", counted)
    from fedsim.driver import run

    summary = run(smoke_config(rounds=5), tmp_path / "w", progress=False)
    assert summary["rounds"] == 5
    chex.clear_trace_counter()


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_dp_round_traced_once_while_the_clip_adapts(sampling):
    config = smoke_config(
        dp_clip=0.5, dp_noise=0.5, dp_target_quantile=0.5, dp_count_noise=1.0,
        client_sampling=sampling,
    )  # fmt: skip
    round_fn, server, clients, federation = round_and_state(config)
    round_fn = jax.jit(chex.assert_max_traces(round_fn, n=1))
    clips = [float(server.clip)]
    for r in range(4):
        server, clients, _ = round_fn(
            server, clients, federation, jnp.int32(r), jax.random.PRNGKey(0)
        )
        clips.append(float(server.clip))
    assert len(set(clips)) > 1, clips
    chex.clear_trace_counter()
