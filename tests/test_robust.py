"""Robust aggregation (median, trimmed mean, Krum/Multi-Krum, norm bounding) and simulated attacks:
the engine, which stacks the round's updates with padding slots, equals a plain per-client numpy loop
on three toy clients; the rules count only valid rows; the new names run from the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_engine_reference as ref
from jax.flatten_util import ravel_pytree
from test_traces import smoke_config

from fedsim.algorithms import robust
from fedsim.algorithms.fedavg import fedavg
from fedsim.cli import main
from fedsim.engine import setup
from fedsim.engine.faults import Faults, flip_labels


def np_median(u, n):
    return np.median(u, axis=0)


def np_trimmed(beta):
    def rule(u, n):
        cut = int(np.floor(beta * len(u)))
        return np.sort(u, axis=0)[cut : len(u) - cut].mean(axis=0)

    return rule


def np_krum(f, m):
    def rule(u, n):
        dist = ((u[:, None] - u[None]) ** 2).sum(-1)
        k = max(len(u) - f - 2, 0)
        scores = [np.sort(np.delete(dist[i], i))[:k].sum() for i in range(len(u))]
        return u[np.argsort(scores, kind="stable")[:m]].mean(axis=0)

    return rule


def np_normbound(bound):
    def rule(u, n):
        norms = np.linalg.norm(u, axis=1, keepdims=True)
        clipped = u * np.minimum(1, bound / norms)
        return (n[:, None] * clipped).sum(0) / n.sum()

    return rule


def np_fedavg(u, n):
    return (n[:, None] * u).sum(0) / n.sum()


def reference(model, fed, model_vars, clients_per_round, aggregate, attack=lambda c, u: u):
    """``w <- w + aggregate(U, n)`` over the sampled clients' flattened updates ``U`` (``[K, P]``,
    in sampling order; ``attack(client, u)`` is what client ``client`` sends)."""
    w = ref.to_np(model_vars.params)
    for r in range(ref.ROUNDS):
        sampled, _ = ref.client_schedule(fed, r, 0, clients_per_round)
        rows = []
        for c in map(int, sampled):
            _, batches = ref.client_schedule(fed, r, c, clients_per_round)
            local = ref.reference_local(model, fed, w, batches)
            rows.append(attack(c, ravel_pytree(jax.tree.map(np.subtract, local, w))[0]))
        flat, unravel = ravel_pytree(w)
        step = aggregate(np.stack(rows), ref.SIZES[sampled].astype(np.float64))
        w = ref.to_np(unravel(flat + step))
    return w


CASES = {
    "median": (robust.median, np_median),
    "trimmed": (robust.trimmed_mean(0.34), np_trimmed(0.34)),
    "krum": (robust.krum(0, 1), np_krum(0, 1)),
    "multi_krum": (robust.krum(0, 2), np_krum(0, 2)),
    "normbound": (robust.norm_bound(0.5), np_normbound(0.5)),  # clips some of the toy's updates
}


@pytest.mark.parametrize(
    ("name", "clients_per_round", "chunk_size"),
    [
        ("median", 2, 3),
        ("trimmed", 3, 2),
        ("krum", 3, 2),
        ("normbound", 2, 3),
    ],
)
def test_robust_equals_reference(toy, name, clients_per_round, chunk_size):
    """Both layouts have a padding slot; 2 of the 3 clients a round is partial participation."""
    fed, model, mv = toy
    rule, np_rule = CASES[name]
    algorithm = robust.robust_fedavg(model, optax.sgd(ref.LR), rule)
    server, _ = ref.run_engine(algorithm, fed, mv, clients_per_round, chunk_size)
    ref.assert_close(server.model.params, reference(model, fed, mv, clients_per_round, np_rule))


def test_sign_flip_attackers_send_negated_deltas(toy):
    fed, model, mv = toy
    faults = Faults(attack="sign_flip", attackers=(1,), attack_scale=2.0)
    server, _ = ref.run_engine(fedavg(model, optax.sgd(ref.LR)), fed, mv, 3, 2, faults=faults)
    flipped = lambda c, u: -2.0 * u if c == 1 else u
    ref.assert_close(server.model.params, reference(model, fed, mv, 3, np_fedavg, flipped))


@pytest.mark.parametrize("name", CASES)
def test_rules_count_only_valid_rows(name):
    """Invalid rows change nothing, even when they hold large values (the engine zeroes them)."""
    rule, np_rule = CASES[name]
    rng = np.random.default_rng(0)
    valid = np.array([True, False, True, True, False, True, True])
    deltas = {"a": rng.normal(size=(7, 3, 2)), "b": rng.normal(size=(7, 4))}
    deltas["a"][~valid] = 1e6
    weights = np.where(valid, rng.integers(1, 9, 7), 0).astype(np.float64)
    got = rule(jax.tree.map(jnp.float32, deltas), jnp.float32(weights), jnp.asarray(valid))
    flat = np.stack([ravel_pytree(jax.tree.map(lambda d, i=i: d[i], deltas))[0] for i in range(7)])
    expected = np_rule(flat[valid], weights[valid])
    got_flat = np.asarray(ravel_pytree(got)[0])
    np.testing.assert_allclose(got_flat, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [
        ["--config.algorithm=fedavg_median", "--config.attack=sign_flip"],
        ["--config.algorithm=fedavg_trimmed", "--config.attack=noise"],
        ["--config.algorithm=fedavg_krum", "--config.attack=label_flip"],
        ["--config.algorithm=fedavg_normbound", "--config.attack=scale"],
    ],
)
def test_robust_runs_from_the_cli(tmp_path, extra):
    argv = ["run", "--config=configs/fedavg.py:smoke", "--config.attack_fraction=0.2", *extra]
    assert main([*argv, f"--workdir={tmp_path / 'run'}"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["attackers"]) == 2  # of the smoke run's 10 clients


def test_label_flip_flips_only_the_attackers_labels():
    data = setup.load_federation(smoke_config())
    attackers = np.array([1, 4])
    flipped = flip_labels(data, attackers)
    for c in range(data.num_clients):
        _, y = data.client_arrays(c)
        _, y_sent = flipped.client_arrays(c)
        expected = data.num_classes - 1 - y if c in attackers else y
        np.testing.assert_array_equal(y_sent, expected)
        hist = np.bincount(y_sent, minlength=data.num_classes)
        np.testing.assert_array_equal(flipped.label_histogram[c], hist)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--config.attack=flip", "attack='flip'; choose one of"),
        ("--config.attack_fraction=1.5", "attack_fraction=1.5 must lie in [0, 1]"),
        ("--config.attack_noise=0", "attack_noise=0.0 must be > 0"),
        ("--config.algorithm=fedavg_trimmed --config.fedavg_trimmed.beta=0.5", "in [0, 0.5)"),
        ("--config.algorithm=fedavg_krum --config.fedavg_krum.multi=0", "integer >= 1"),
        ("--config.algorithm=fedavg_median --config.dp_clip=1.0", "DP-FedAvg noises their sum"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, flag, message):
    argv = ["run", "--config=configs/fedavg.py:smoke", *flag.split()]
    assert main([*argv, f"--workdir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
