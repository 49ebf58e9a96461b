"""DP-FedAvg: clipping, noise, adaptive clipping, sparse updates, Poisson sampling and accounting."""

import json
from typing import NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting import pld, rdp
from test_engine_reference import run_engine

from fedsim import privacy
from fedsim.algorithms import ClientSetup, get_spec
from fedsim.algorithms.base import Dataset, FederatedAlgorithm, PersonalScores, Update
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.fedltn import fedltn
from fedsim.algorithms.maestro import maestro
from fedsim.algorithms.task import client_task
from fedsim.cli import main
from fedsim.config import algorithm_hparams, load_config
from fedsim.engine.round import build_round_fn, poisson_slots, sample_clients
from fedsim.errors import ConfigError
from fedsim.models import get_model
from fedsim.models.base import ModelVars
from fedsim.privacy import ClippedUpdate, DPSettings, Mechanism, dp_fedavg
from fedsim.privacy.dp_fedavg import clip_by_norm

NUM_CLIENTS, EPOCHS, BATCH, LR, SEED = 3, 2, 4, 0.5, 0
SIZES = np.array([5, 12, 9], np.int32)
KEY = jax.random.PRNGKey(7)
CONFIG = "configs/fedavg.py"


def norm(tree):
    return float(
        np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree)))
    )


def test_clip_by_norm_caps_the_norm_and_keeps_small_updates():
    rng = np.random.default_rng(1)
    for scale in (0.01, 0.5, 30.0):
        tree = {
            "a": jnp.asarray(scale * rng.normal(size=(7, 3))),
            "b": jnp.asarray(rng.normal(size=4)),
        }
        clipped, n = clip_by_norm(tree, 1.0)
        assert float(n) == pytest.approx(norm(tree), rel=1e-5)
        if norm(tree) <= 1.0:
            jax.tree.map(np.testing.assert_array_equal, clipped, tree)
        else:
            assert norm(clipped) == pytest.approx(1.0, rel=1e-5)
            ratio = np.asarray(clipped["a"]) / np.asarray(tree["a"])
            np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # same direction


@pytest.mark.parametrize("clip", [0.05, 0.3, 100.0])
def test_every_clients_transmitted_update_has_norm_at_most_clip(toy, clip):
    fed, model, init = toy
    algorithm = dp_fedavg(fedavg(model, optax.sgd(LR)), DPSettings(clip, 1.0, 3), SEED)
    server = algorithm.server_init(init)
    for row in range(NUM_CLIENTS):
        task = client_task(fed, row, jax.random.fold_in(KEY, row), epochs=EPOCHS, batch_size=BATCH)
        result = algorithm.client_update(server, (), task, Dataset(fed.x, fed.y))
        sent = result.contribution.delta
        raw = fedavg(model, optax.sgd(LR)).client_update(
            server.inner, (), task, Dataset(fed.x, fed.y)
        )
        size = float(SIZES[row])
        unweighted = jax.tree.map(lambda d, n=size: d / n, raw.contribution.delta)
        assert norm(sent) <= clip * (1 + 1e-5)
        if norm(unweighted) <= clip:  # untouched (weight 1, not n_k)
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                sent,
                unweighted,
            )
            assert float(result.contribution.unclipped) == 1.0
        else:
            assert norm(sent) == pytest.approx(clip, rel=1e-5)
            assert float(result.contribution.unclipped) == 0.0


class _Recorded(NamedTuple):
    model: ModelVars
    seen: Update | None


def _recorder(settings):
    """The mechanism around a stand-in whose server step stores the total it is handed."""
    stand_in = FederatedAlgorithm(
        "recorder",
        server_init=lambda model_vars: _Recorded(model_vars, None),
        client_init=lambda model_vars: (),
        client_update=None,
        server_update=lambda state, total: _Recorded(state.model, total),
    )
    return dp_fedavg(stand_in, settings, SEED)


def test_noise_standard_deviation_is_z_times_clip():
    z, clip, clients = 1.7, 0.4, 10.0
    algorithm = _recorder(DPSettings(clip, z, clients))
    params = {"w": jnp.zeros((300, 400)), "b": jnp.zeros(50)}
    state = algorithm.server_init(ModelVars(params, {}))
    zero = ClippedUpdate(jax.tree.map(jnp.zeros_like, params), jnp.float32(0))
    seen = algorithm.server_update(state, zero).inner.seen
    noise = np.concatenate([np.ravel(x) for x in jax.tree.leaves(seen.delta)])
    assert noise.std() == pytest.approx(z * clip, rel=0.01)
    assert abs(noise.mean()) < 0.01 * z * clip
    assert float(seen.weight) == clients  # the fixed denominator, not the number who came
    # a new key every round: the next round's noise differs
    again = algorithm.server_update(algorithm.server_update(state, zero), zero).inner.seen
    assert not np.allclose(np.asarray(again.delta["b"]), np.asarray(seen.delta["b"]))


def test_sparse_updates_fixed_mask_divides_every_coordinate_by_the_expected_count():
    params = {"w": jnp.zeros(6)}
    total = ClippedUpdate(
        delta={"w": jnp.arange(6.0)},
        unclipped=jnp.float32(2),
        coverage={"w": jnp.asarray([0.0, 1, 2, 3, 0, 1])},
    )
    for fixed, want in ((False, total.coverage["w"]), (True, jnp.full(6, 4.0))):
        algorithm = _recorder(DPSettings(1.0, 0.0, 4, fixed_mask=fixed))
        state = algorithm.server_init(ModelVars(params, {}))
        seen = algorithm.server_update(state, total).inner.seen
        np.testing.assert_array_equal(seen.coverage["w"], want)
        np.testing.assert_array_equal(seen.delta["w"], total.delta["w"])  # z = 0: no noise


def test_adaptive_clipping_moves_the_clip_towards_the_quantile():
    gamma, eta = 0.5, 0.2
    algorithm = _recorder(DPSettings(1.0, 0.0, 10, target_quantile=gamma, clip_lr=eta))
    state = algorithm.server_init(ModelVars({"w": jnp.zeros(3)}, {}))
    clip = 1.0
    for unclipped in (10.0, 10.0, 0.0, 5.0):  # all below C: shrink; none: grow; half: stay
        total = ClippedUpdate({"w": jnp.zeros(3)}, jnp.float32(unclipped))
        state = algorithm.server_update(state, total)
        clip *= np.exp(-eta * (unclipped / 10 - gamma))
        assert float(state.clip) == pytest.approx(clip, rel=1e-6)


def test_adaptive_clipping_splits_the_noise_budget():
    settings = DPSettings(1.0, 1.0, 100, target_quantile=0.5, count_noise=5.0)
    z_delta = settings.update_noise_multiplier
    # Andrew et al. 2021: z^-2 = z_delta^-2 + (2 sigma_b)^-2
    assert z_delta**-2 + (2 * 5.0) ** -2 == pytest.approx(1.0)
    assert z_delta > 1.0


def reference_dp_rounds(toy, settings, rounds, clients_per_round):
    """Per client in a Python loop: local training (the plain FedAvg client), then in numpy the
    unweighted update, its clipping, the sum, the server's noise (same keys) and the fixed mean."""
    fed, model, init = toy
    plain = fedavg(model, optax.sgd(LR))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), init.params)
    dp_key = jax.random.fold_in(jax.random.PRNGKey(SEED), 3)
    for r in range(rounds):
        sample_key, client_key = jax.random.split(jax.random.fold_in(KEY, r))
        sampled = np.asarray(
            jax.random.choice(sample_key, NUM_CLIENTS, (clients_per_round,), replace=False)
        )
        server = plain.server_init(ModelVars(jax.tree.map(jnp.float32, params), init.state))
        total = jax.tree.map(np.zeros_like, params)
        for c in sampled:
            task = client_task(
                fed, int(c), jax.random.fold_in(client_key, int(c)), epochs=EPOCHS, batch_size=BATCH
            )
            sent = plain.client_update(server, (), task, Dataset(fed.x, fed.y)).contribution
            size = float(SIZES[c])
            update = jax.tree.map(lambda d, n=size: np.asarray(d, np.float64) / n, sent.delta)
            scale = min(1.0, settings.clip / norm(update))
            total = jax.tree.map(lambda t, u, s=scale: t + s * u, total, update)
        dp_key, noise_key, _ = jax.random.split(dp_key, 3)
        leaves, treedef = jax.tree.flatten(total)
        keys = jax.random.split(noise_key, len(leaves))
        std = settings.noise_multiplier * settings.clip
        noisy = [
            leaf + std * np.asarray(jax.random.normal(k, leaf.shape), np.float64)
            for leaf, k in zip(leaves, keys, strict=True)
        ]
        mean = jax.tree.unflatten(treedef, [n / settings.expected_clients for n in noisy])
        params = jax.tree.map(np.add, params, mean)
    return params


@pytest.mark.parametrize(("clients_per_round", "chunk_size"), [(3, 1), (3, 3), (2, 2)])
def test_vmapped_dp_round_equals_a_per_client_loop(toy, clients_per_round, chunk_size):
    fed, model, init = toy
    settings = DPSettings(0.2, 0.8, clients_per_round)
    algorithm = dp_fedavg(fedavg(model, optax.sgd(LR)), settings, SEED)
    server, _ = run_engine(algorithm, fed, init, clients_per_round, chunk_size, rounds=3)
    want = reference_dp_rounds(toy, settings, 3, clients_per_round)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=1e-6),
        server.model.params,
        want,
    )


def test_poisson_sampling_slots_are_unique_and_join_at_rate_q():
    num_clients, k = 200, 20
    slots = poisson_slots(num_clients, k)
    assert k < slots <= num_clients
    counts = np.zeros(num_clients)
    joined_total = []
    for r in range(300):
        ids, joined = sample_clients(jax.random.PRNGKey(r), num_clients, k, "poisson")
        ids, joined = np.asarray(ids), np.asarray(joined)
        assert ids.shape == (slots,)
        real = ids[joined]
        assert len(set(real.tolist())) == len(real)  # no client twice
        assert np.all(ids[~joined] == num_clients)  # empty slots carry the padding id
        assert np.all(joined[: joined.sum()])  # joined clients fill the first slots
        counts[real] += 1
        joined_total.append(joined.sum())
    assert np.mean(joined_total) == pytest.approx(k, rel=0.05)
    assert np.std(joined_total) == pytest.approx(np.sqrt(k * 0.9), rel=0.25)
    assert counts.mean() / 300 == pytest.approx(0.1, rel=0.05)


def test_mechanism_epsilon_equals_dp_accounting_directly():
    # Poisson, RDP and PLD
    for name, fresh in (
        ("rdp", lambda: rdp.RdpAccountant(privacy.accounting.RDP_ORDERS)),
        (
            "pld",
            lambda: pld.PLDAccountant(
                value_discretization_interval=privacy.accounting.PLD_INTERVAL
            ),
        ),
    ):
        mechanism = Mechanism(1000, 50, "poisson", name, 1e-5)
        direct = fresh()
        direct.compose(
            dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.1)), 200
        )
        assert mechanism.epsilon(1.1, 200) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    # fixed-size: replace-one neighbours, the clipped sum moves by 2C, so the multiplier halves
    direct = rdp.RdpAccountant(
        privacy.accounting.RDP_ORDERS, dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    direct.compose(
        dp_accounting.SampledWithoutReplacementDpEvent(
            100, 10, dp_accounting.GaussianDpEvent(2.0 / 2)
        ),
        50,
    )
    fixed = Mechanism(100, 10, "fixed", "rdp", 1e-5)
    assert fixed.epsilon(2.0, 50) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    # sanity: an unsampled Gaussian against the closed form of dp-accounting's own helper
    once = Mechanism(10, 10, "poisson", "pld", 1e-5)
    closed = dp_accounting.get_epsilon_gaussian(3.0, 1e-5)
    assert once.epsilon(3.0, 1) == pytest.approx(closed, rel=0.01)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_target_epsilon_calibrates_the_noise(accountant):
    mechanism = Mechanism(100, 10, "poisson", accountant, 1e-5)
    for target in (1.0, 4.0):
        z = mechanism.noise_for_epsilon(target, 30)
        assert mechanism.epsilon(z, 30) == pytest.approx(target, rel=1e-3)
        assert mechanism.epsilon(0.95 * z, 30) > target


def run_cli(tmp_path, arg, *flags):
    workdir = tmp_path / "run"
    code = main(["run", f"--config={CONFIG}:{arg}", *flags, f"--workdir={workdir}"])
    return code, workdir


def read(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((workdir / "summary.json").read_text())


def test_cli_dp_run_reports_epsilon_every_evaluation(tmp_path):
    code, workdir = run_cli(
        tmp_path,
        "smoke,dp_clip=0.5,dp_noise=1.2,client_sampling=poisson,dp_accountant=pld",
        "--config.rounds=4",
        "--config.eval_every=2",
    )
    assert code == 0
    rows, summary = read(workdir)
    config = json.loads((workdir / "config.json").read_text())
    mechanism = Mechanism(
        config["num_clients"], config["clients_per_round"], "poisson", "pld", 1e-5
    )
    assert [row["epsilon"] for row in rows] == [
        pytest.approx(mechanism.epsilon(1.2, r)) for r in (2, 4)
    ]
    assert rows[0]["epsilon"] < rows[1]["epsilon"] == summary["epsilon"]
    assert summary["dp_noise_multiplier"] == 1.2
    assert np.isfinite(summary["global_acc"])


def test_cli_target_epsilon_and_adaptive_clipping(tmp_path):
    code, workdir = run_cli(
        tmp_path, "smoke,dp_clip=0.5,dp_target_epsilon=3.0,dp_target_quantile=0.5,dp_count_noise=2"
    )
    assert code == 0
    rows, summary = read(workdir)
    assert summary["epsilon"] == pytest.approx(3.0, rel=1e-3)
    assert rows[-1]["clip_norm"] != 0.5  # the clip moved


@pytest.mark.parametrize(
    "arg",
    [
        "algorithm=fedltn,dataset=digits,model=mlp,val_fraction=0.2,dp_clip=1.0,dp_mask=fixed",
        "algorithm=lotteryfl,dataset=digits,model=mlp,val_fraction=0.2,dp_clip=1.0",
    ],
)
def test_sparse_algorithms_run_under_dp(tmp_path, arg):
    code, workdir = run_cli(tmp_path, f"smoke,{arg}")
    assert code == 0
    _, summary = read(workdir)
    assert summary["epsilon"] > 0 and np.isfinite(summary["personal_acc_mean"])


def test_maestro_factor_slots_run_under_dp(tmp_path):
    workdir = tmp_path / "run"
    arg = "mode=federated,smoke,rounds=2,dp_clip=0.5,dp_noise=0.3,client_sampling=poisson"
    assert main(["run", f"--config=configs/maestro.py:{arg}", f"--workdir={workdir}"]) == 0
    rows, summary = read(workdir)
    assert summary["epsilon"] > 0
    assert all(np.isfinite(row["global_acc"]) for row in rows)
    assert any(key.startswith("acc_p") for key in rows[-1])  # tier sub-models still reported


def test_dp_without_clients_at_a_round_keeps_the_server_finite(tmp_path):
    code, workdir = run_cli(tmp_path, "smoke,dp_clip=0.5,dropout_prob=0.9")
    assert code == 0
    rows, _ = read(workdir)
    assert all(np.isfinite(row["global_acc"]) for row in rows)


@pytest.mark.parametrize(
    ("arg", "named"),
    [
        ("dp_clip=1.0,algorithm=scaffold", "algorithm='scaffold'"),
        ("dp_clip=1.0,dp_accountant=pld", "dp_accountant='pld'"),
        ("dp_clip=1.0,dp_accountant=moments", "dp_accountant='moments'"),
        ("dp_clip=1.0,dp_mask=union", "dp_mask='union'"),
        ("dp_clip=-1.0", "dp_clip=-1.0"),
        ("dp_clip=1.0,dp_delta=2.0", "dp_delta=2.0"),
        ("client_sampling=bernoulli", "client_sampling='bernoulli'"),
        ("dp_clip=1.0,dp_target_quantile=0.5,dp_count_noise=0.1", "dp_count_noise=0.1"),
        (
            "dp_clip=1.0,algorithm=fedltn,fedltn.jump_start_rounds=3,val_fraction=0.2",
            "warm-up round (fedltn_jump_start)",
        ),
    ],
)
def test_bad_dp_input_exits_2_with_one_line_and_no_workdir(tmp_path, capsys, arg, named):
    code, workdir = run_cli(tmp_path, f"smoke,{arg}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and named in err[0], err
    assert not workdir.exists()


def test_poisson_round_counts_only_clients_who_joined(toy):
    fed, model, init = toy
    algorithm = fedavg(model, optax.sgd(LR))
    round_fn = jax.jit(
        build_round_fn(
            algorithm,
            num_clients=NUM_CLIENTS,
            clients_per_round=1,
            chunk_size=1,
            local_epochs=EPOCHS,
            batch_size=BATCH,
            sampling="poisson",
        )
    )
    server = algorithm.server_init(init)
    for r in range(6):
        server, _, m = round_fn(server, (), fed, jnp.int32(r), KEY)
        joined = np.asarray(m.participated)
        assert np.all(np.asarray(m.up_bytes)[~joined] == 0)
        assert np.all(np.asarray(m.num_examples)[~joined] == 0)
        assert not np.asarray(m.failed)[~joined].any()
        np.testing.assert_array_equal(
            np.asarray(m.num_examples)[joined], SIZES[np.asarray(m.client_ids)[joined]]
        )
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(server.model.params))


PRIVATIZABLE = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedavg_ft")
SPARSE = ("ditto", "lotteryfl", "subfedavg", "fedltn")


# fedbn's own message is refused the same way; on this toy MLP it is refused earlier, at client_init
# (a model without normalisation layers), so scaffold and local_only stand for the non-Update case.
@pytest.mark.parametrize("name", PRIVATIZABLE + SPARSE + ("scaffold", "local_only"))
def test_check_wrappable_tells_from_the_algorithm_whether_it_sends_an_update(toy, name):
    fed, model, init = toy
    spec = get_spec(name)
    hparams = algorithm_hparams(load_config(f"{CONFIG}:smoke,algorithm={name}"), spec)
    algorithm = spec.build(hparams, ClientSetup(model, NUM_CLIENTS, 2, optax.sgd(LR), "sgd", LR, 1))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), init)
    dataset = Dataset(fed.x, fed.y)
    if name in PRIVATIZABLE + SPARSE:
        privacy.check_wrappable(algorithm, abstract, dataset)
        return
    with pytest.raises(ConfigError) as err:
        privacy.check_wrappable(algorithm, abstract, dataset)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"algorithm={name!r}" in message and "Update" in message


def test_check_wrappable_refuses_a_warmup_round(toy):
    fed, model, init = toy
    algorithm = fedltn(model, optax.sgd(LR), jump_start_rounds=2)
    with pytest.raises(ConfigError, match="warm-up round"):
        privacy.check_wrappable(algorithm, init, Dataset(fed.x, fed.y))


def test_dp_keeps_every_hook_of_what_it_wraps(toy):
    fed, model, init = toy
    inner = fedltn(model, optax.sgd(LR), density_budgets=(1.0, 0.5), jump_start_rounds=2)
    wrapped = dp_fedavg(inner, DPSettings(0.7, 1.0, 3), SEED)
    replaced = {"name", "server_init", "client_update", "server_update"}
    unwrapped = {"personalize", "submodels", "report"}
    for field in set(FederatedAlgorithm._fields) - replaced - unwrapped:
        assert getattr(wrapped, field) is getattr(inner, field), field
    assert wrapped.warmup is inner.warmup and wrapped.submodels is None
    server, client = wrapped.server_init(init), wrapped.client_init(init)
    task = client_task(fed, 0, KEY, epochs=EPOCHS, batch_size=BATCH)
    dataset = Dataset(fed.x, fed.y)
    jax.tree.map(
        np.testing.assert_array_equal,
        wrapped.personalize(server, client, task, dataset),
        inner.personalize(server.inner, client, task, dataset),
    )
    scores = PersonalScores(
        np.array([0.2, 0.4, 0.9]), np.array([8, 4, 6]), np.array([4, 2, 3]), np.ones(3)
    )
    want = {"clip_norm": pytest.approx(0.7), **inner.report(server.inner, scores)}
    assert wrapped.report(server, scores) == want


def test_dp_unwraps_submodels_and_reports_the_clip_alone():
    model = get_model("mlp", 4, hidden=(5,), factorized=True)
    x = jnp.zeros((1, 3, 2, 1))
    init = model.init(jax.random.PRNGKey(1), x)
    inner = maestro(model, optax.sgd(LR), tiers=(0.5, 1.0))
    wrapped = dp_fedavg(inner, DPSettings(0.5, 1.0, 3), SEED)
    server = wrapped.server_init(init)
    got, want = wrapped.submodels(server, x), inner.submodels(server.inner, x)
    assert list(got) == list(want) == ["p50", "p100"]
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert inner.report is None and wrapped.report(server, None) == {"clip_norm": 0.5}
