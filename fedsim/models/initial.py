"""A run's initial model variables: the seed's initialisation, or a finished dense run's model.

A factorised model started from a dense one gets each layer's truncated SVD (``fedsim.compress.lowrank``;
Maestro's warm start, Horváth et al. 2024), optionally cut to a budget of deployed parameters.
"""

import jax
import jax.numpy as jnp

from fedsim.compress import lowrank
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars

ALLOCATIONS = {"energy": lowrank.ranks_by_energy, "uniform": lowrank.ranks_for_budget}


def initial_variables(
    model: Model,
    sample_x,
    seed: int,
    start: ModelVars | None = None,
    params_budget: int = 0,
    allocation: str = "energy",
) -> ModelVars:
    """``model.init`` under ``fold_in(PRNGKey(seed), 0)``, or ``start`` (SVD-factorised for a
    factorised model, truncated to ``params_budget`` deployed parameters when that is > 0, with the
    ranks of ``ALLOCATIONS[allocation]``: singular-value energy per parameter, or the same fraction
    of every layer — the weaker baseline)."""
    init_key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    model_vars = model.init(init_key, jnp.asarray(sample_x))
    if start is None:
        return model_vars
    if lowrank.layer_paths(model_vars.params):
        params = lowrank.factorize(start.params, model_vars.params)
        ranks = lowrank.full_ranks(params)
        if params_budget:
            ranks = ALLOCATIONS[allocation](params, params_budget)
        state = {**start.state, lowrank.RANKS: model_vars.state[lowrank.RANKS]}
        start = ModelVars(params, lowrank.with_rank_vector(state, ranks))
    return jax.tree.map(jnp.asarray, start)


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
