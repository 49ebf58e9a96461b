"""Timing one compiled round of a config, for round-cost ratios measured interleaved in one process."""

import statistics
import time

import jax
import jax.numpy as jnp

from fedsim.config import load_config
from fedsim.engine.loop import Experiment


def compiled_round(config: str):
    """A no-argument function running the next round of ``config`` (``FILE.py:ARG``); returns seconds."""
    experiment = Experiment(load_config(config))
    server, clients = experiment.init()
    federation, key = experiment.federation(), jax.random.PRNGKey(0)
    fn = (
        jax.jit(experiment.round_fn).lower(server, clients, federation, jnp.int32(0), key).compile()
    )
    state = {"server": server, "clients": clients, "round": 0}

    def one_round():
        t = time.perf_counter()
        out = fn(state["server"], state["clients"], federation, jnp.int32(state["round"]), key)
        jax.block_until_ready(out)
        state.update(server=out[0], clients=out[1], round=state["round"] + 1)
        return time.perf_counter() - t

    one_round()  # warm-up
    return one_round


def interleaved_medians(configs: dict[str, str], rounds: int) -> dict[str, float]:
    """Median round seconds of each named config, timed in turn (A, B, A, B, ...) so that load on the
    machine affects all alike."""
    fns = {name: compiled_round(config) for name, config in configs.items()}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}
