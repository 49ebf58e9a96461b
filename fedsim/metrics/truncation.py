"""Accuracy against MACs of one trained factorised model cut greedily to several budgets without
fine-tuning (``fedsim.compress.deploy``; Maestro's 'train once, deploy everywhere', Horváth et al.,
ICML 2024). A dense model is first factorised by SVD, so the same rule cuts both.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.algorithms.local import masked_cross_entropy
from fedsim.compress import deploy, lowrank
from fedsim.metrics.evaluate import build_predict_correct
from fedsim.models.base import Model, ModelVars


def linear_macs(model: Model, model_vars: ModelVars, sample_x):
    """``macs_at(ranks) -> int``: the model's MACs per example at ``ranks``, in closed form (one
    ``model.macs`` call per layer to find where it is applied, then host arithmetic)."""
    params = model_vars.params
    exact = lambda r: int(model.macs(lowrank.at_ranks(model_vars, jnp.asarray(r)), sample_x))
    return lowrank.closed_form_macs(params, exact, lowrank.layer_positions(params, exact))


def calibration_loss(model: Model, model_vars: ModelVars, x, y):
    """``loss_at(ranks [K, L]) -> [K]``: the mean cross-entropy on ``(x, y)`` at each row of ranks."""

    @jax.jit
    def losses(model_vars, ranks, x, y):
        def one(r):
            logits, _ = model.apply(
                lowrank.at_ranks(model_vars, r), x, False, jax.random.PRNGKey(0)
            )
            return masked_cross_entropy(logits, y, jnp.ones(x.shape[0], bool))

        return jax.lax.map(one, ranks)

    return lambda ranks: losses(model_vars, jnp.asarray(ranks, jnp.int32), x, y)


def truncation_curve(
    model: Model, model_vars: ModelVars, calibration, test, budgets, step=1, batch_size=500
) -> list[dict]:
    """For each MAC budget, the greedy path's first model that fits it (``deploy.greedy_path`` from
    the model's kept ranks, scored on the ``calibration`` pair ``(x, y)``), with its accuracy on the
    ``test`` pair, MACs, deployed parameters and ranks; budgets no model fits are left out."""
    x_cal, y_cal = (jnp.asarray(a) for a in calibration)
    macs_at = linear_macs(model, model_vars, x_cal[:1])
    path = deploy.greedy_path(
        calibration_loss(model, model_vars, x_cal, y_cal),
        macs_at,
        np.asarray(lowrank.rank_vector(model_vars.state)),
        step,
    )
    correct = jax.jit(build_predict_correct(model, batch_size))
    rows = []
    for budget in budgets:
        ranks = deploy.ranks_within(path, budget)
        if ranks is None:
            continue
        cut = lowrank.at_ranks(model_vars, jnp.asarray(ranks))
        rows.append({
            "budget_macs": int(budget),
            "macs": macs_at(ranks),
            "params": int(lowrank.deployed_params(model_vars.params, ranks)),
            "ranks": [int(r) for r in ranks],
            "test_acc": float(np.mean(correct(cut, *(jnp.asarray(a) for a in test)))),
        })  # fmt: skip
    return rows
