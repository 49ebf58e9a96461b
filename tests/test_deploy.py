"""Train once, deploy everywhere: the greedy truncation path (``fedsim.compress.deploy``) on toys whose
best cuts are known, and its model-facing curve (``fedsim.metrics.truncation``) against references."""

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.compress import deploy, lowrank
from fedsim.metrics import truncation
from fedsim.models import get_model

KEY = jax.random.PRNGKey(0)


def test_greedy_path_takes_the_cheapest_loss_per_mac_first():
    # layer 0: each dropped slot costs 1 loss and saves 1 MAC; layer 1: 10 loss for 100 MACs (0.1/MAC)
    start = np.array([4, 3])
    macs_at = lambda r: int(r[0] * 1 + r[1] * 100)
    loss_at = lambda ranks: np.array([(4 - r[0]) * 1.0 + (3 - r[1]) * 10.0 for r in ranks])
    path = deploy.greedy_path(loss_at, macs_at, start)
    assert [tuple(int(v) for v in p.ranks) for p in path] == [
        (4, 3), (4, 2), (4, 1), (3, 1), (2, 1), (1, 1)
    ]  # fmt: skip
    assert [p.macs for p in path] == [304, 204, 104, 103, 102, 101]
    assert [p.loss for p in path] == [0.0, 10.0, 20.0, 21.0, 22.0, 23.0]
    assert deploy.ranks_within(path, 150).tolist() == [4, 1]
    assert deploy.ranks_within(path, 100) is None


def test_a_layer_in_its_dense_form_jumps_to_where_a_cut_saves_macs():
    # n = m = 4: a slot costs 8, the dense form 16, so ranks 4, 3 and 2 all cost 16 MACs
    macs_at = lambda r: int(min(16, 8 * r[0]) + min(16, 8 * r[1]))
    moves = deploy.candidate_moves(np.array([4, 2]), macs_at, step=1)
    assert [m.tolist() for m in moves] == [[1, 2], [4, 1]]
    assert deploy.candidate_moves(np.array([1, 1]), macs_at, step=1) == []


def test_step_drops_several_slots_a_move():
    macs_at = lambda r: int(r.sum())
    moves = deploy.candidate_moves(np.array([9, 2]), macs_at, step=4)
    assert [m.tolist() for m in moves] == [[5, 2], [9, 1]]


def _mlp_with_dead_slots(x):
    """A factorised MLP whose first layer's slots from 3 on are zero (dead: cutting them is free)."""
    model = get_model("mlp", 3, hidden=(8,), factorized=True)
    model_vars = model.init(KEY, x[:1])
    layer = lowrank.layer_paths(model_vars.params)[0]
    params = jax.tree_util.tree_map(lambda a: a, model_vars.params)
    node = params[layer[0]]
    node["u"] = node["u"].at[:, 3:].set(0.0)
    node["v"] = node["v"].at[:, 3:].set(0.0)
    return model, model_vars._replace(params=params)


def test_linear_macs_matches_the_model_at_any_ranks():
    x = jax.random.normal(KEY, (64, 6))
    model, model_vars = _mlp_with_dead_slots(x)
    macs_at = truncation.linear_macs(model, model_vars, x[:1])
    for ranks in ([6, 3], [1, 1], [4, 2], [2, 3]):
        cut = lowrank.at_ranks(model_vars, jnp.asarray(ranks))
        assert macs_at(np.array(ranks)) == int(model.macs(cut, x[:1]))


def test_truncation_curve_cuts_dead_slots_first_at_no_loss_of_accuracy():
    x = jax.random.normal(KEY, (64, 6))
    model, model_vars = _mlp_with_dead_slots(x)
    y = jnp.argmax(model.apply(model_vars, x, False, KEY)[0], axis=-1)  # the full model is exact
    macs_at = truncation.linear_macs(model, model_vars, x[:1])
    full = macs_at(np.asarray(lowrank.rank_vector(model_vars.state)))
    dead_cut = macs_at(np.array([3, 3]))
    rows = truncation.truncation_curve(model, model_vars, (x, y), (x, y), [full, dead_cut, 0])
    assert [r["budget_macs"] for r in rows] == [full, dead_cut]  # nothing fits 0 MACs
    assert rows[0]["test_acc"] == 1.0 and rows[0]["macs"] == full
    assert rows[1]["ranks"][0] == 3 and rows[1]["test_acc"] == 1.0
    assert rows[1]["params"] == int(lowrank.deployed_params(model_vars.params, rows[1]["ranks"]))
