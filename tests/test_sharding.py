"""The client axis sharded over eight fake CPU devices (tests/conftest.py) gives the one-device run."""

import jax
import numpy as np
import pytest
from test_traces import run_all, smoke_config

from fedsim.driver import run
from fedsim.engine import setup
from fedsim.errors import ConfigError


def final_state(config):
    *_, last = run_all(config)[1]
    return last.summaries[0], last.state(0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(clients_per_round=5),  # 5 slots on 8 devices: three devices only pad
        dict(algorithm="scaffold", clients_per_round=5, chunk_size=1),  # per-client state
        dict(  # masks, personal BN and the Jump-Start warm-up round (all 12 clients)
            algorithm="fedltn",
            num_clients=12,
            clients_per_round=10,
            val_fraction=0.2,
            **{"fedltn.jump_start_rounds": 2},
        ),
        dict(algorithm="pfedme", clients_per_round=5),  # personal models, deployed re-estimated
    ],
    ids=["fedavg", "scaffold", "fedltn", "pfedme"],
)
def test_sharded_round_equals_single_device(overrides):
    assert len(jax.devices()) == 8
    one, one_state = final_state(smoke_config(devices=1, **overrides))
    eight, eight_state = final_state(smoke_config(devices=8, **overrides))
    for key in ("global_acc", "personal_acc_mean", "up_mb", "down_mb", "density"):
        assert eight[key] == pytest.approx(one[key], abs=1e-6), key
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert_same_states(one_state, eight_state)


def assert_same_states(one_state, eight_state):
    states = lambda s: jax.tree.leaves((s.server_state, s.client_states))
    for a, b in zip(states(one_state), states(eight_state), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


# issue 21's methods, each with what sharding could break: per-client state (FedDyn, MOON, top-k's
# error feedback, APFL), personal layers (FedPer, FedRep), loss-weighted or order-statistic
# aggregation over the padded slots (q-FFL, median, trimmed mean, Krum), a buffer (FedBuff)
CATALOGUE = {
    "feddyn": {},
    "moon": {},
    "fedper": {},
    "fedrep": {},
    "apfl": {},
    "qffl": {},
    "fedbuff": {"latency_sigma": 1.0, "latency_jitter": 0.3},
    "fedavg_topk": {"fedavg_topk.fraction": 0.1},
    "fedavg_qsgd": {},
    "fedavg_sign": {},
    "fedavg_median": {"attack": "sign_flip", "attack_fraction": 0.4, "attack_scale": 4.0},
    "fedavg_trimmed": {"attack": "scale", "attack_fraction": 0.4, "attack_scale": 10.0},
    "fedavg_krum": {"attack": "noise", "attack_fraction": 0.4, "fedavg_krum.byzantine": 1},
    "fedavg_normbound": {"attack": "label_flip", "attack_fraction": 0.4},
}


@pytest.mark.parametrize("algorithm", CATALOGUE)
def test_catalogue_sharded_equals_single_device(algorithm):
    overrides = dict(algorithm=algorithm, clients_per_round=5, rounds=2, eval_every=1,
                     val_fraction=0.2, **CATALOGUE[algorithm])  # fmt: skip
    one, one_state = final_state(smoke_config(devices=1, **overrides))
    eight, eight_state = final_state(smoke_config(devices=8, **overrides))
    for key in ("global_acc", "personal_acc_mean", "up_mb"):
        assert eight[key] == pytest.approx(one[key], abs=1e-6), key
    assert eight["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert_same_states(one_state, eight_state)


def test_sharded_dp_run_resumes_in_the_driver(tmp_path):
    config = smoke_config(
        devices=0, rounds=4, dp_clip=0.5, dp_noise=0.3, client_sampling="poisson"
    )  # fmt: skip
    whole = run(config, tmp_path / "a", progress=False)
    (tmp_path / "a" / "summary.json").unlink()  # as if killed after the last checkpoint
    resumed = run(config, tmp_path / "a", progress=False)
    assert resumed["resumed_from_round"] == 2
    assert resumed["global_acc"] == whole["global_acc"]
    alone = run(smoke_config(**{**config, "devices": 1}), tmp_path / "b", progress=False)
    assert whole["global_acc"] == pytest.approx(alone["global_acc"], abs=1e-6)


def test_more_devices_than_visible_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"devices=9: accepted 0 \(all\) or 1..8"):
        setup.build_experiment(smoke_config(devices=9))
