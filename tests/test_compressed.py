"""FedAvg with a compressed uplink (top-k with error feedback, QSGD, scaled sign): the vmapped engine
equals a plain per-client numpy loop on the toy clients (server model and residuals), the bytes are
the encodings', top-k at fraction 1 is FedAvg, and each runs from the CLI under DP and as one vmapped
sweep."""

import json
import math

import jax
import numpy as np
import optax
import pytest
from test_engine_reference import (
    KEY,
    LR,
    NUM_CLIENTS,
    ROUNDS,
    SIZES,
    assert_close,
    client_schedule,
    reference_local,
    run_engine,
    to_np,
)
from test_grid import run_sweep_cells

from fedsim.algorithms.compressed import COMPRESS_STREAM, QSGD, TOPK, compressed_fedavg
from fedsim.algorithms.fedavg import fedavg
from fedsim.cli import main
from fedsim.compress import uplink
from fedsim.errors import ConfigError


def compress_key(round_index, client):
    """The key client ``client`` compresses with in round ``round_index`` (the engine's derivation:
    ``client_task``'s task key, folded with ``COMPRESS_STREAM``)."""
    _, client_key = jax.random.split(jax.random.fold_in(KEY, round_index))
    task_key = jax.random.split(jax.random.fold_in(client_key, client))[1]
    return jax.random.fold_in(task_key, COMPRESS_STREAM)


def keep_largest(flat, k):
    out = np.zeros_like(flat)
    top = np.argsort(-np.abs(flat), kind="stable")[:k]
    out[top] = flat[top]
    return out


def ref_top_k(tree, fraction, scope):
    leaves, treedef = jax.tree.flatten(tree)
    if scope == "layer":
        kept = [keep_largest(v.ravel(), math.ceil(fraction * v.size)) for v in leaves]
    else:
        flat = np.concatenate([v.ravel() for v in leaves])
        kept = np.split(
            keep_largest(flat, math.ceil(fraction * flat.size)),
            np.cumsum([v.size for v in leaves])[:-1],
        )
    return jax.tree.unflatten(
        treedef, [k.reshape(v.shape) for k, v in zip(kept, leaves, strict=True)]
    )


def ref_qsgd(tree, key, bits):
    """QSGD in float64 on the engine's uniform draws (one over all coordinates, in leaf order)."""
    s = 2**bits - 1
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [v.size for v in leaves]
    draws = np.asarray(jax.random.uniform(key, (sum(sizes),)), np.float64)
    out = []
    for v, u in zip(leaves, np.split(draws, np.cumsum(sizes)[:-1]), strict=True):
        norm = np.linalg.norm(v)
        level = np.minimum(np.floor(s * np.abs(v) / norm + u.reshape(v.shape)), s)
        out.append(norm * np.sign(v) * level / s)
    return jax.tree.unflatten(treedef, out)


def ref_sign(tree):
    return jax.tree.map(lambda v: np.mean(np.abs(v)) * np.where(v >= 0, 1.0, -1.0), tree)


def reference(model, fed, model_vars, compress, error_feedback, clients_per_round):
    """Per client: ``v = u + e``, send ``C(v)``, keep ``e = v - C(v)``; the server adds the
    ``n_k``-weighted mean of the messages."""
    w = to_np(model_vars.params)
    residual = [jax.tree.map(np.zeros_like, w) for _ in range(NUM_CLIENTS)]
    for r in range(ROUNDS):
        sampled, _ = client_schedule(fed, r, 0, clients_per_round)
        messages, weights = [], []
        for c in map(int, sampled):
            _, batches = client_schedule(fed, r, c, clients_per_round)
            v = jax.tree.map(np.subtract, reference_local(model, fed, w, batches), w)
            if error_feedback:
                v = jax.tree.map(np.add, v, residual[c])
            messages.append(compress(v, compress_key(r, c)))
            if error_feedback:
                residual[c] = jax.tree.map(np.subtract, v, messages[-1])
            weights.append(float(SIZES[c]))
        total = sum(weights)
        step = lambda wi, *m, ws=tuple(weights), t=total: (
            wi + sum(a * b for a, b in zip(ws, m, strict=True)) / t
        )
        w = jax.tree.map(step, w, *messages)
    return w, residual


CASES = {  # name: (engine compressor, reference compressor, error feedback, K, chunk size)
    "topk-layer": (
        lambda t, _: uplink.top_k(t, 0.25, "layer"),
        lambda t, _: ref_top_k(t, 0.25, "layer"),
        True,
        3,
        1,
    ),
    "qsgd": (
        lambda t, key: uplink.qsgd(t, key, 2),
        lambda t, key: ref_qsgd(t, key, 2),
        False,
        3,
        3,
    ),
    "sign-partial": (lambda t, _: uplink.scaled_sign(t), lambda t, _: ref_sign(t), True, 2, 2),
}


@pytest.mark.parametrize("case", CASES)
def test_compressed_fedavg_equals_reference(toy, case):
    fed, model, mv = toy
    compress, ref_compress, feedback, clients_per_round, chunk_size = CASES[case]
    algorithm = compressed_fedavg(model, optax.sgd(LR), compress, feedback)
    server, residuals = run_engine(algorithm, fed, mv, clients_per_round, chunk_size)
    w, ref_residuals = reference(model, fed, mv, ref_compress, feedback, clients_per_round)
    assert_close(server.model.params, w)
    if feedback:
        for c in range(NUM_CLIENTS):
            assert_close(jax.tree.map(lambda a, c=c: a[c], residuals), ref_residuals[c])


def test_top_k_at_fraction_one_is_fedavg(toy):
    fed, model, mv = toy
    top_all = compressed_fedavg(model, optax.sgd(LR), lambda t, _: uplink.top_k(t, 1.0), True)
    server, residuals = run_engine(top_all, fed, mv, 2, 2)
    plain, _ = run_engine(fedavg(model, optax.sgd(LR)), fed, mv, 2, 2)
    jax.tree.map(np.testing.assert_array_equal, server.model.params, plain.model.params)
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(residuals))


TREE = {  # no ties, no zeros
    "kernel": np.random.default_rng(0).normal(size=(12, 10)).astype(np.float32),
    "bias": np.array([0.5, -2.0, 0.25], np.float32),
}


def sparse_bytes(n, z):
    return min(4 * n, math.ceil(n / 8) + 4 * z, 8 * z)


@pytest.mark.parametrize("scope", uplink.SCOPES)
def test_top_k_keeps_the_largest_and_counts_their_sparse_encoding(scope):
    top_k = jax.jit(uplink.top_k, static_argnames="scope")
    for fraction in (0.01, 0.3, 1.0):
        sent, size = top_k(TREE, np.float32(fraction), scope)
        expected = ref_top_k(to_np(TREE), fraction, scope)
        assert_close(sent, expected)
        kept = [(v.size, np.count_nonzero(v)) for v in jax.tree.leaves(expected)]
        assert int(size) == sum(sparse_bytes(n, z) for n, z in kept)


def test_top_k_keeps_exactly_k_even_with_ties():
    assert int(uplink.top_k_count(0.3, 10)) == 3 and int(uplink.top_k_count(1e-6, 10)) == 1
    for k in (1, 4, 7):
        mask = uplink.top_k_mask(np.zeros(7, np.float32), k)
        assert int(mask.sum()) == k and mask[:k].all()


def test_qsgd_is_unbiased_on_its_levels():
    v = np.array([0.3, -1.2, 0.0, 2.0, -0.05], np.float32)
    keys = jax.random.split(KEY, 20000)
    draws, sizes = jax.vmap(lambda k: uplink.qsgd({"v": v}, k, 2))(keys)
    draws = np.asarray(draws["v"])
    assert set(np.asarray(sizes).tolist()) == {4 + math.ceil(5 * 3 / 8)}  # norm, 3 bits a value
    levels = np.abs(draws) * 3 / np.linalg.norm(v)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # on the grid l / s
    assert set(np.unique(np.round(levels[:, 1]))) == {1.0, 2.0}  # floor or floor + 1
    np.testing.assert_allclose(draws.mean(0), v, atol=0.02)


def test_scaled_sign_sends_one_bit_a_coordinate_and_a_scale():
    sent, size = uplink.scaled_sign(TREE)
    np.testing.assert_allclose(sent["bias"], [11 / 12, -11 / 12, 11 / 12])
    assert int(size) == (4 + math.ceil(120 / 8)) + (4 + 1)


def test_bad_values_get_one_line():
    with pytest.raises(ConfigError, match=r"fedavg_qsgd.bits=0 must be an integer in \[1, 23\]"):
        QSGD.check({**QSGD.hparams, "bits": 0})
    with pytest.raises(ConfigError, match="fedavg_topk.fraction=0 must be in"):
        TOPK.check({**TOPK.hparams, "fraction": 0})
    with pytest.raises(ConfigError, match="fedavg_topk.scope='all'; choose one of: layer, global"):
        TOPK.check({**TOPK.hparams, "scope": "all"})


SMOKE_SIZES = (784 * 16, 16, 16 * 10, 10)  # configs/fedavg.py:smoke's MLP on mnist_subset
UP_BYTES = {  # per client and round
    "fedavg_topk": sum(sparse_bytes(n, math.ceil(0.01 * n)) for n in SMOKE_SIZES),
    "fedavg_qsgd": sum(4 + math.ceil(n * 3 / 8) for n in SMOKE_SIZES),
    "fedavg_sign": sum(4 + math.ceil(n / 8) for n in SMOKE_SIZES),
}


@pytest.mark.parametrize("algorithm", UP_BYTES)
def test_compressed_runs_from_the_cli_under_dp_and_counts_its_bytes(tmp_path, algorithm):
    workdir = tmp_path / "run"
    argv = ["run", "--config=configs/fedavg.py:smoke", f"--config.algorithm={algorithm}"]
    assert main([*argv, "--config.dp_clip=1.0", f"--workdir={workdir}"]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["up_mb"] == pytest.approx(2 * 3 * UP_BYTES[algorithm] / 1e6)  # 2 rounds, K = 3


def test_top_k_fraction_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = run_sweep_cells(
        tmp_path, '[{"algorithm": "fedavg_topk", "fedavg_topk.fraction": f} for f in (0.05, 0.5)]'
    )
    assert "2 cells trained as one vmapped grid" in capsys.readouterr().out
    assert cells[0]["summary"]["up_mb"] < cells[1]["summary"]["up_mb"]
    assert cells[0]["summary"]["global_acc"] != cells[1]["summary"]["global_acc"]
