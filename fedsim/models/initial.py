"""A run's initial model variables: the seed's initialisation, or a finished dense run's model.

A factorised model started from a dense one gets each layer's truncated SVD (``fedsim.compress.lowrank``;
Maestro's warm start, Horváth et al. 2024), optionally cut to a budget of deployed parameters or of
MACs. A factorised model may also start at fixed ranks (from the seed's initialisation or the SVD).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.compress import lowrank
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars

PARAMS_ALLOCATIONS = {"energy": lowrank.ranks_by_energy, "uniform": lowrank.ranks_for_budget}
ALLOCATIONS = (*PARAMS_ALLOCATIONS, "macs")


class Truncation(NamedTuple):
    """The kept ranks a factorised start model gets (config keys ``init_*``): ``ranks`` when given,
    else the ``allocation``'s ranks for ``params_budget`` (``energy``: singular-value energy per
    parameter; ``uniform``: the same fraction of every layer, the strawman) or for ``macs_budget``
    (``macs``: energy per MAC), else full rank."""

    allocation: str = "energy"
    params_budget: int = 0
    macs_budget: int = 0
    ranks: tuple[int, ...] = ()


FULL_RANK = Truncation()


def start_ranks(model: Model, model_vars: ModelVars, sample_x, truncation: Truncation):
    """The kept ranks ``[L]`` of the factorised ``model_vars`` under ``truncation``."""
    t, params = truncation, model_vars.params
    if t.ranks:
        return jnp.asarray(t.ranks, jnp.int32)
    if t.macs_budget:
        at = lambda ranks: ModelVars(params, lowrank.with_rank_vector(model_vars.state, ranks))
        return lowrank.ranks_by_macs(params, t.macs_budget, lambda r: model.macs(at(r), sample_x))
    if t.params_budget:
        return PARAMS_ALLOCATIONS[t.allocation](params, t.params_budget)
    return lowrank.full_ranks(params)


def initial_variables(
    model: Model,
    sample_x,
    seed: int,
    start: ModelVars | None = None,
    truncation: Truncation = FULL_RANK,
) -> ModelVars:
    """``model.init`` under ``fold_in(PRNGKey(seed), 0)``, or ``start`` (SVD-factorised for a
    factorised model); a factorised model then keeps the ranks of ``truncation``."""
    init_key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    sample_x = jnp.asarray(sample_x)
    model_vars = model.init(init_key, sample_x)
    if not lowrank.layer_paths(model_vars.params):
        return model_vars if start is None else jax.tree.map(jnp.asarray, start)
    if start is not None:
        params = lowrank.factorize(start.params, model_vars.params)
        model_vars = ModelVars(
            params, {**start.state, lowrank.RANKS: model_vars.state[lowrank.RANKS]}
        )
    ranks = start_ranks(model, model_vars, sample_x, truncation)
    model_vars = model_vars._replace(state=lowrank.with_rank_vector(model_vars.state, ranks))
    return jax.tree.map(jnp.asarray, model_vars)


def check_ranks(model: Model, sample_x, ranks: tuple[int, ...], describe: str) -> None:
    """Raises ConfigError unless ``ranks`` gives every factorised layer of ``model`` a rank in
    ``[0, R]``; ``describe`` names the offending settings in the message."""
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(sample_x))
    full = [int(r) for r in lowrank.full_ranks(expected.params)]
    if len(ranks) != len(full) or not all(0 <= r <= f for r, f in zip(ranks, full, strict=True)):
        raise ConfigError(
            f"{describe}={tuple(ranks)}: give one rank per factorised layer, each in [0, R], "
            f"R = {tuple(full)}"
        )


def check_start_model(model: Model, sample_x, start: ModelVars, describe: str) -> None:
    """Raises ConfigError unless ``start`` holds ``model``'s dense variables; ``describe`` names the
    offending settings in the message."""
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(sample_x))
    if lowrank.layer_paths(expected.params):
        expected = expected._replace(
            params=lowrank.dense_shapes(expected.params),
            state=lowrank.without_ranks(expected.state),
        )
    shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
    if shapes(expected) != shapes(start):
        raise ConfigError(
            f"{describe} holds a model that does not match the configured model "
            "(init_from takes a dense run of the same architecture)"
        )
