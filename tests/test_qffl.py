"""q-FFL (Li et al. 2020, q-FedAvg): the vmapped engine equals a plain per-client loop (each client's
loss at the received model, FedAvg's local SGD, the ``Delta_k`` and ``h_k`` of Algorithm 3 weighted by
``n_k``) on three toy clients (TinyBN), and it runs from the CLI, under DP and as a vmapped sweep,
reporting the variance of the clients' accuracies."""

import json

import jax
import numpy as np
import optax
import pytest
import test_fedltn_reference
import test_personalised_reference as ref
from test_engine_reference import KEY, LR, ROUNDS
from test_fedper import check_personal_sweep, run_smoke

from fedsim.algorithms.qffl import qffl
from fedsim.models.base import ModelVars

toy = test_fedltn_reference.toy  # three clients with validation splits, TinyBN


def client_loss(model, fed, c, params, state) -> float:
    """``F_k``: mean cross-entropy on all of client ``c``'s training examples, eval mode."""
    idx = np.asarray(fed.client_indices[c][: int(fed.num_examples[c])])
    logits, _ = model.apply(ModelVars(ref.f32(params), ref.f32(state)), fed.x[idx], False, KEY)
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, fed.y[idx]).mean())


def reference_qffl(model, fed, init, per_round, q):
    """``w <- w - sum n_k Delta_k / sum n_k h_k``; statistics weighted by ``n_k h_k``."""
    w, s = ref.f64(init.params), ref.f64(init.state)
    for r in range(ROUNDS):
        deltas, hs, states = [], [], []
        for c in ref.sampled_clients(fed, r, per_round):
            loss = client_loss(model, fed, c, w, s) + 1e-10
            trained, state = ref.sgd(model, fed, w, s, ref.local_batches(fed, r, c, per_round))
            dw = jax.tree.map(lambda a, b: (a - b) / LR, w, trained)
            squared = sum(np.sum(d**2) for d in jax.tree.leaves(dw))
            n = float(fed.num_examples[c])
            deltas.append(jax.tree.map(lambda d, n=n, f=loss: n * f**q * d, dw))
            hs.append(n * (q * loss ** (q - 1) * squared + loss**q / LR))
            states.append(state)
        total = sum(hs)
        w = jax.tree.map(lambda wi, *d, t=total: wi - sum(d) / t, w, *deltas)
        s = ref.weighted_mean(states, hs)
    return w, s


@pytest.mark.parametrize(("q", "per_round", "chunk"), [(0.0, 3, 1), (2.0, 2, 2)])
def test_qffl_matches_python_loop(toy, q, per_round, chunk):
    fed, model, init = toy
    server, _ = ref.run_engine(qffl(model, optax.sgd(LR), LR, q=q), fed, init, per_round, chunk)
    ref.assert_close(server.model, ModelVars(*reference_qffl(model, fed, init, per_round, q)))


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0"]])
def test_qffl_runs_from_the_cli_and_reports_the_accuracy_variance(tmp_path, extra):
    summary = run_smoke(tmp_path, "qffl", *extra)
    accuracies = json.loads((tmp_path / "personal_acc.json").read_text())["personal_acc"]
    assert summary["personal_acc_var"] == pytest.approx(np.var(accuracies))


def test_qffl_sweep_is_one_vmapped_grid(tmp_path, capsys):
    check_personal_sweep(
        tmp_path, capsys, '[{"algorithm": "qffl", "qffl.q": q} for q in (0.0, 5.0)]'
    )
