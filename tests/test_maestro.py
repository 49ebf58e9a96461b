"""Maestro's factorised layers, group lasso, sampler and shrinking (../shared/specs/maestro.md), and its
vmapped round (capacity tiers, shell-wise aggregation, shrinking) against a plain per-client loop."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from test_engine_reference import BATCH, EPOCHS, KEY, NUM_CLIENTS, SIZES

from fedsim.algorithms.maestro import maestro
from fedsim.cli import main
from fedsim.compress import lowrank
from fedsim.data.batching import client_batches
from fedsim.engine.round import build_round_fn
from fedsim.models import get_model
from fedsim.models.layers import Conv2D, Dense

X_IMG = jax.random.normal(jax.random.PRNGKey(3), (4, 12, 12, 2))


@pytest.mark.parametrize(
    "name, kwargs, x",
    [
        ("cnn", {"width": 4, "hidden": 16, "conv_impl": "im2col"}, X_IMG),
        ("cnn", {"width": 4, "hidden": 16, "conv_impl": "xla"}, X_IMG),
        ("mlp", {"hidden": (7,)}, X_IMG),
        ("transformer", {"dim": 16, "heads": 2, "layers": 1}, jnp.arange(30).reshape(3, 10) % 11),
    ],
)
def test_factorised_model_at_full_rank_equals_dense(name, kwargs, x):
    dense = get_model(name, 11, **kwargs)
    factored = get_model(name, 11, factorized=True, **kwargs)
    d, f = dense.init(KEY, x[:1]), factored.init(KEY, x[:1])
    assert lowrank.layer_paths(f.params) and not lowrank.layer_paths(d.params)
    out_d, _ = dense.apply(d, x, False, KEY)
    out_f, _ = factored.apply(f, x, False, KEY)
    np.testing.assert_allclose(out_f, out_d, rtol=1e-4, atol=1e-5)
    assert int(factored.macs(f, x[:1])) == int(dense.macs(d, x[:1]))
    assert lowrank.dense_params(f.params) == sum(np.size(p) for p in jax.tree.leaves(d.params))


def _layer_at(module, x, keep):
    variables = module.init(KEY, x)
    ranks = {"keep": jnp.int32(keep)}
    out = module.apply({**variables, "ranks": ranks}, x)
    return variables["params"], out


@pytest.mark.parametrize("keep", [0, 1, 3, 6])
def test_rank_mask_truncates_exactly(keep):
    x = jax.random.normal(KEY, (5, 9))
    p, out = _layer_at(Dense(6, factorized=True), x, keep)
    expected = x @ p["v"][:, :keep] @ p["u"][:, :keep].T + p["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

    conv = Conv2D(5, (3, 3), impl="xla", factorized=True)
    p, out = _layer_at(conv, X_IMG, keep)
    kernel = jnp.einsum("hwir,or->hwio", p["v"][..., :keep], p["u"][:, :keep])
    dims = ("NHWC", "HWIO", "NHWC")
    ref = jax.lax.conv_general_dilated(X_IMG, kernel, (1, 1), "SAME", dimension_numbers=dims)
    np.testing.assert_allclose(out, ref + p["bias"], rtol=1e-4, atol=1e-5)


def test_compaction_slices_or_merges_and_counts():
    params = {"a": {"v": np.ones((10, 4)), "u": np.ones((3, 4)), "bias": np.zeros(3)}}
    params["b"] = {"v": np.arange(40.0).reshape(20, 2), "u": np.ones((30, 2)), "bias": np.ones(30)}
    compact = lowrank.compact(params, np.array([3, 1]))
    assert compact["a"]["kernel"].shape == (10, 3)  # 3 * 13 > 30: merged back to dense
    assert compact["b"]["v"].shape == (20, 1) and compact["b"]["u"].shape == (30, 1)
    stored = sum(np.size(leaf) for leaf in jax.tree.leaves(compact))
    assert stored == int(lowrank.deployed_params(params, jnp.array([3, 1])))
    np.testing.assert_allclose(compact["a"]["kernel"], np.full((10, 3), 3.0))


def _hgl_by_loop(params):
    total = 0.0
    for _, u, v in params:
        for b in range(u.shape[1]):
            slots = range(b, u.shape[1])
            a = sum(np.sum(u[:, k] ** 2) for k in slots)
            c = sum(np.sum(v[..., k] ** 2) for k in slots)
            total += np.sqrt(a) + np.sqrt(c)
    return total


def test_group_lasso_value_and_finite_gradient_at_zero():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(4, 3)), rng.normal(size=(2, 2, 1, 3))
    u[:, 2] = 0
    v[..., 2] = 0  # a dead slot: the penalty's gradient must stay finite there
    params = {"conv": {"u": jnp.asarray(u), "v": jnp.asarray(v), "bias": jnp.zeros(4)}}
    expected = _hgl_by_loop([("conv", u, v)])
    np.testing.assert_allclose(lowrank.group_lasso(params), expected, rtol=1e-5)
    grads = jax.grad(lowrank.group_lasso)(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    zero = jax.tree.map(jnp.zeros_like, params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(jax.grad(lowrank.group_lasso)(zero)))


def test_importance_is_non_increasing_and_shrinking_cuts_the_tail():
    u = jnp.asarray(np.diag([3.0, 2.0, 1e-4, 0.0]))
    params = {"d": {"u": u, "v": u, "bias": jnp.zeros(4)}}
    (s,) = lowrank.importance(params)
    assert np.all(np.diff(np.asarray(s)) <= 0)
    assert lowrank.shrunk_ranks(params, 1e-3, "absolute").tolist() == [2]
    assert lowrank.shrunk_ranks(params, 1e-9, "absolute").tolist() == [3]


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e2, 1e4])
def test_relative_cut_finds_the_dead_tail_at_any_scale(scale):
    """Two layers at very different scales whose tails (3 and 5 slots) sit 1e-4 below their heads:
    the relative cut finds exactly those tails whatever the scale; the absolute one cannot."""
    head = lambda n: np.linspace(2.0, 1.0, n)
    tail = lambda n: 1e-4 * np.linspace(1.0, 0.5, n)
    a = np.concatenate([head(5), tail(3)]) * scale
    b = np.concatenate([head(3), tail(5)]) * scale * 1e-4
    params = {"a": _factors(a, 20, 8, 4), "b": _factors(b, 8, 12, 5)}
    assert lowrank.shrunk_ranks(params, 1e-3, "relative").tolist() == [5, 3]
    assert lowrank.shrunk_ranks(params, 1e-5, "absolute").tolist() != [5, 3]


def test_relative_cut_removes_an_all_zero_layer():
    zero = {"u": jnp.zeros((4, 3)), "v": jnp.zeros((5, 3))}
    assert lowrank.shrunk_ranks({"z": zero}, 1e-3, "relative").tolist() == [0]


def test_sampler_truncates_one_layer_with_probability_proportional_to_rank():
    keep = jnp.array([6, 0, 2])
    samples = np.asarray(
        jax.vmap(lowrank.sample_ranks, (0, None))(jax.random.split(KEY, 8000), keep)
    )
    changed = samples != np.asarray(keep)[None]
    assert changed.sum(axis=1).max() <= 1 and not changed[:, 1].any()
    assert samples.min() >= 0 and (samples[:, 0] >= 1).all() and (samples <= keep).all()
    layer = np.where(samples[:, 2] < 2, 2, 0)  # which layer was drawn (b = keep is "unchanged")
    first = samples[:, 0]
    # P(layer 0) = 6/8, b uniform on 1..6: P(first = b) = 6/8 * 1/6 for b < 6
    np.testing.assert_allclose(np.mean(first == 3), 1 / 8, atol=0.015)
    np.testing.assert_allclose(np.mean(samples[:, 2] == 1), 2 / 8 / 2, atol=0.015)
    assert (layer >= 0).all()


def test_tier_caps_and_budget():
    keep = jnp.array([10, 3, 1, 0])
    assert lowrank.tier_caps(keep, 0.25).tolist() == [3, 1, 1, 0]
    model = get_model("cnn", 10, width=4, hidden=32, factorized=True)
    params = model.init(KEY, X_IMG[:1]).params
    budget = lowrank.dense_params(params) // 3
    ranks = lowrank.ranks_for_budget(params, budget)
    assert int(lowrank.deployed_params(params, ranks)) <= budget
    assert int(lowrank.deployed_params(params, ranks + 1)) > budget


# ----- the round against a per-client Python loop ---------------------------------------------

TIERS, LAMBDA, DECAY, LR, EPS = (0.34, 0.67, 1.0), 0.02, 0.01, 0.1, 0.6


def _forward(params, ranks, x):
    h = x.reshape((x.shape[0], -1))
    for i, name in enumerate(("Dense_0", "Dense_1")):
        p = params[name]
        h = (h @ p["v"][:, : ranks[i]]) @ p["u"][:, : ranks[i]].T + p["bias"]
        h = jax.nn.relu(h) if i == 0 else h
    return h


def _hgl(params):
    total = 0.0
    for name in ("Dense_0", "Dense_1"):
        u, v = params[name]["u"], params[name]["v"]
        for b in range(u.shape[1]):
            total += jnp.sqrt(jnp.sum(u[:, b:] ** 2)) + jnp.sqrt(jnp.sum(v[:, b:] ** 2))
    return total


def _reference_client(fed, params, caps, client, round_key):
    """Local SGD by hand: sampled truncation, CE + lambda HGL, decay, slots >= cap frozen."""
    batch_key, task_key = jax.random.split(jax.random.fold_in(round_key, client))
    idx, mask = client_batches(
        batch_key, fed.client_indices[client], fed.num_examples[client], epochs=EPOCHS,
        batch_size=BATCH,
    )  # fmt: skip
    keys = jax.random.split(task_key, idx.shape[0])
    for row in range(idx.shape[0]):
        if not mask[row].any():
            continue
        batch = np.asarray(idx[row])[np.asarray(mask[row])]
        ranks = np.asarray(lowrank.sample_ranks(jax.random.fold_in(keys[row], 1), caps))

        def loss(p, batch=batch, ranks=ranks):
            logits = _forward(p, ranks, fed.x[batch])
            ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(batch)), fed.y[batch]])
            return ce + LAMBDA * _hgl(p)

        grads = jax.grad(loss)(params)
        new = {}
        for i, name in enumerate(("Dense_0", "Dense_1")):
            own = np.arange(params[name]["u"].shape[1]) < caps[i]
            g = {k: grads[name][k] + DECAY * params[name][k] for k in ("u", "v", "bias")}
            g["u"], g["v"] = g["u"] * own, g["v"] * own
            new[name] = {k: params[name][k] - LR * g[k] for k in g}
        params = new
    return params


def _reference_rounds(fed, start, ranks, clients_per_round, rounds):
    params = jax.tree.map(jnp.asarray, start)
    for r in range(rounds):
        sample_key, client_key = jax.random.split(jax.random.fold_in(KEY, r))
        sampled = np.asarray(
            jax.random.choice(sample_key, NUM_CLIENTS, (clients_per_round,), replace=False)
        )
        trained, caps, weights = [], [], []
        for c in sampled:
            cap = np.where(ranks > 0, np.maximum(np.ceil(TIERS[c % 3] * ranks), 1), 0).astype(int)
            trained.append(_reference_client(fed, params, jnp.asarray(cap), int(c), client_key))
            caps.append(cap)
            weights.append(float(SIZES[c]))
        new = {}
        for i, name in enumerate(("Dense_0", "Dense_1")):
            new[name] = {
                "bias": sum(w * t[name]["bias"] for w, t in zip(weights, trained, strict=True))
                / sum(weights)
            }
            for k in ("u", "v"):
                column = np.array(params[name][k])
                for s in range(column.shape[1]):  # shell-wise: over the clients that own slot s
                    owners = [
                        (w, t)
                        for w, t, cap in zip(weights, trained, caps, strict=True)
                        if s < cap[i]
                    ]
                    if owners:
                        cover = sum(w for w, _ in owners)
                        column[:, s] = (
                            sum(w * np.asarray(t[name][k][:, s]) for w, t in owners) / cover
                        )
                new[name][k] = jnp.asarray(column)
        params = new
        for i, name in enumerate(("Dense_0", "Dense_1")):
            u, v = np.asarray(params[name]["u"]), np.asarray(params[name]["v"])
            scores = [
                np.sqrt(np.sum(u[:, b:] ** 2)) * np.sqrt(np.sum(v[:, b:] ** 2))
                for b in range(u.shape[1])
            ]
            ranks[i] = min(ranks[i], sum(s >= EPS for s in scores))
    return params, ranks


@pytest.mark.parametrize("clients_per_round, chunk_size", [(3, 1), (3, 2), (2, 2)])
def test_maestro_round_equals_per_client_loop(toy, clients_per_round, chunk_size):  # noqa: F811
    fed, _, _ = toy
    model = get_model("mlp", 4, hidden=(5,), factorized=True)
    mv = model.init(jax.random.PRNGKey(1), fed.x[:1])
    algorithm = maestro(
        model, __import__("optax").sgd(LR), lambda_gl=LAMBDA, epsilon=EPS, cut="absolute",
        weight_decay=DECAY, tiers=TIERS, shrink_every=1,
    )  # fmt: skip
    round_fn = jax.jit(
        build_round_fn(
            algorithm, num_clients=NUM_CLIENTS, clients_per_round=clients_per_round,
            chunk_size=chunk_size, local_epochs=EPOCHS, batch_size=BATCH,
        )
    )  # fmt: skip
    server, clients = algorithm.server_init(mv), ()
    for r in range(3):
        server, clients, _ = round_fn(server, clients, fed, jnp.int32(r), KEY)
    ranks = np.asarray(lowrank.rank_vector(mv.state)).copy()
    expected, expected_ranks = _reference_rounds(fed, mv.params, ranks, clients_per_round, 3)
    assert lowrank.rank_vector(server.model.state).tolist() == expected_ranks.tolist()
    assert expected_ranks.sum() < lowrank.full_ranks(mv.params).sum()  # shrinking happened
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5),
        server.model.params,
        expected,
    )


# ----- runs through the command line -------------------------------------------------------------

MAESTRO = str(Path(__file__).resolve().parents[1] / "configs/maestro.py")


def _last_metrics(workdir):
    return json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])


def test_central_maestro_and_svd_baseline_runs(tmp_path):
    dense, svd, maestro_dir = tmp_path / "dense", tmp_path / "svd", tmp_path / "maestro"
    assert main(["run", f"--config={MAESTRO}:smoke,method=dense", f"--workdir={dense}"]) == 0
    full = _last_metrics(dense)["params"]
    arg = "smoke,maestro.lambda_gl=0.05,maestro.epsilon_ps=0.05,rounds=3"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={maestro_dir}"]) == 0
    last = _last_metrics(maestro_dir)
    assert last["params"] < full and last["params_p100"] == last["params"]
    assert last["model_mb"] == pytest.approx(4 * last["params"] / 1e6)
    compact = serialization.msgpack_restore((maestro_dir / "model_compact.msgpack").read_bytes())
    assert sum(np.size(leaf) for leaf in jax.tree.leaves(compact["params"])) == last["params"]

    budget = full // 4
    arg = f"smoke,method=svd,init_from={dense},init_params_budget={budget}"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={svd}"]) == 0
    assert _last_metrics(svd)["params"] <= budget


@pytest.mark.parametrize(
    "arg, named",
    [
        ("smoke,method=svd,init_from=/no/such/run", "init_from='/no/such/run'"),
        ("smoke,maestro.rank_tiers=0.5", "maestro.rank_tiers"),
        ("smoke,maestro.rank_tiers=(0.5,2.0)", "maestro.rank_tiers=(0.5, 2.0)"),
        ("smoke,algorithm=fedavg", "factorized=True"),
        ("smoke,maestro.lambda_gl=-1.0", "maestro.lambda_gl=-1.0"),
        ("smoke,lambda_gl=0.1", "did you mean maestro.lambda_gl"),
        ("smoke,mode=distributed", "mode='distributed'"),
    ],
)
def test_bad_maestro_input_exits_2(arg, named, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not workdir.exists()


def test_init_from_another_architecture_exits_2(tmp_path, capsys):
    dense = tmp_path / "dense"
    assert main(["run", f"--config={MAESTRO}:smoke,method=dense", f"--workdir={dense}"]) == 0
    arg = f"smoke,method=svd,init_from={dense}"
    flags = [f"--config={MAESTRO}:{arg}", "--config.model_kwargs.hidden=9"]
    assert main(["run", *flags, f"--workdir={tmp_path / 'svd'}"]) == 2
    assert "does not match" in capsys.readouterr().err


def test_federated_tiers_report_each_sub_model(tmp_path):
    workdir = tmp_path / "fed"
    assert main(["run", f"--config={MAESTRO}:smoke,mode=federated", f"--workdir={workdir}"]) == 0
    last = _last_metrics(workdir)
    tiers = ("p25", "p50", "p100")
    assert all(0 <= last[f"acc_{t}"] <= 1 for t in tiers)
    assert last["params_p25"] < last["params_p50"] < last["params_p100"]
    assert last["round_mb_p25"] < last["round_mb_p50"] < last["round_mb_p100"]
    assert last["macs_p25"] < last["macs_p100"]


def _factors(singular_values, n, m, seed):
    """A factorised layer ``{u, v}`` whose kernel has exactly these singular values."""
    rng = np.random.default_rng(seed)
    a, _ = np.linalg.qr(rng.normal(size=(n, len(singular_values))))
    b, _ = np.linalg.qr(rng.normal(size=(m, len(singular_values))))
    root = np.sqrt(np.asarray(singular_values, np.float32))
    return {"u": jnp.asarray(b * root), "v": jnp.asarray(a * root)}


def test_energy_allocation_finds_the_best_truncation():
    """Two 40x12 layers (equal slot cost 52): the least squared error within a budget of deployed
    parameters (brute force over every pair of ranks) keeps the largest singular values overall;
    the uniform fraction (the strawman) cannot."""
    loud, quiet = np.linspace(10, 5, 12), np.linspace(1.0, 0.1, 12)
    params = {"a": _factors(loud, 40, 12, 0), "b": _factors(quiet, 40, 12, 1)}
    np.testing.assert_allclose(lowrank.slot_energies(params)[0], loud**2, rtol=1e-4)
    budget = 8 * 52
    fits = lambda r: int(lowrank.deployed_params(params, jnp.asarray(r))) <= budget
    error = lambda r: (loud[r[0] :] ** 2).sum() + (quiet[r[1] :] ** 2).sum()
    pairs = [(ra, rb) for ra in range(1, 13) for rb in range(1, 13) if fits((ra, rb))]
    best = min(pairs, key=error)
    assert best == (7, 1)
    assert tuple(lowrank.ranks_by_energy(params, budget).tolist()) == best
    uniform = tuple(lowrank.ranks_for_budget(params, budget).tolist())
    assert uniform == (4, 4) and error(uniform) > error(best)


def test_energy_allocation_spends_what_a_cheap_layer_fits():
    params = {"big": _factors(np.ones(40), 40, 40, 2), "small": _factors(np.ones(4), 4, 4, 3)}
    ranks = lowrank.ranks_by_energy(params, 80 + 8 * 4)  # one big slot; every small one fits
    assert ranks.tolist() == [1, 4]


def test_mac_allocation_finds_the_best_truncation_under_a_mac_budget():
    """A conv-like layer applied at 16 positions and a Dense one at 1, with the same singular values:
    the least squared error within a MAC budget (brute force) keeps the cheap-per-MAC layer's slots;
    the energy-per-parameter allocation, blind to positions, spends the budget on the wrong layer."""
    sigma = np.linspace(4, 1, 12)
    params = {"conv": _factors(sigma, 40, 12, 6), "dense": _factors(sigma, 40, 12, 7)}
    positions, other = np.array([16, 1]), 100  # ``other``: MACs of a layer that is not factorised
    macs_at = lambda r: other + int(lowrank.factorised_macs(params, r, positions))
    np.testing.assert_array_equal(lowrank.layer_positions(params, macs_at), positions)
    budget = other + 3 * 16 * 52 + 6 * 52
    error = lambda r: (sigma[r[0] :] ** 2).sum() + (sigma[r[1] :] ** 2).sum()
    pairs = [
        (a, b) for a in range(1, 13) for b in range(1, 13) if macs_at(np.array([a, b])) <= budget
    ]
    best = min(pairs, key=error)
    assert best == (2, 12)  # the Dense layer stored dense at 12 of its 12 slots
    assert tuple(lowrank.ranks_by_macs(params, budget, macs_at).tolist()) == best
    same_params = int(lowrank.deployed_params(params, jnp.asarray(best)))
    by_params = lowrank.ranks_by_energy(params, same_params)
    assert macs_at(by_params) > budget


def test_svd_by_macs_and_fixed_rank_runs(tmp_path):
    dense, maestro_dir = tmp_path / "dense", tmp_path / "maestro"
    assert main(["run", f"--config={MAESTRO}:smoke,method=dense", f"--workdir={dense}"]) == 0
    arg = "smoke,maestro.lambda_gl=0.05,maestro.epsilon_ps=0.05,rounds=3"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={maestro_dir}"]) == 0
    found = _last_metrics(maestro_dir)

    budget = found["macs_p100"]  # SVD of the dense model at the MACs Maestro reached
    arg = f"smoke,method=svd,init_from={dense},init_rank_allocation=macs,init_macs_budget={budget}"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={tmp_path / 'svd'}"]) == 0
    assert _last_metrics(tmp_path / "svd")["macs_p100"] <= budget

    fixed = tmp_path / "fixed"
    arg = f"smoke,method=fixed_rank,init_ranks_from={maestro_dir},rounds=3"
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={fixed}"]) == 0
    last = _last_metrics(fixed)
    assert (last["params"], last["macs_p100"]) == (found["params"], found["macs_p100"])


@pytest.mark.parametrize(
    "arg, named",
    [
        ("smoke,method=fixed_rank", "init_ranks or init_ranks_from"),
        ("smoke,method=fixed_rank,init_ranks=(1,2)", "init_ranks=(1, 2)"),
        ("smoke,init_macs_budget=5", "init_macs_budget=5"),
        ("smoke,init_rank_allocation=macs,init_params_budget=5", "init_params_budget=5"),
        ("smoke,init_params_budget=5", "needs init_from"),
        ("smoke,maestro.cut=tail", "maestro.cut='tail'"),
        ("smoke,keep_client_optimizer_state=False", "client_lr_schedule='step'"),
        ("smoke,mode=federated,client_lr_schedule=step", "every client in every round"),
        ("smoke,method=dense,algorithm=fedprox", "algorithm='fedprox': its clients cannot"),
    ],
)
def test_bad_truncation_or_budget_exits_2(arg, named, tmp_path, capsys):
    assert main(["run", f"--config={MAESTRO}:{arg}", f"--workdir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
