"""Config files, ARG parsing and the clients-per-round rule."""

from pathlib import Path

import pytest

from fedsim import config as config_lib
from fedsim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_parse_arg_literals_and_bare_flags():
    assert config_lib.parse_arg("alpha=0.1,num_clients=20,partition=iid,smoke") == {
        "alpha": 0.1,
        "num_clients": 20,
        "partition": "iid",
        "smoke": True,
    }
    assert config_lib.parse_arg(None) == {}


def test_load_config_applies_arg_and_locks():
    config = config_lib.load_config(f"{ROOT}/configs/fedavg.py:algorithm=fedadam,alpha=1")
    assert config.algorithm == "fedadam" and config.fedadam.server_lr == pytest.approx(1e-2)
    assert config.alpha == 1.0 and isinstance(config.alpha, float)
    with pytest.raises(AttributeError):
        config.not_a_key = 1
    smoke = config_lib.load_config(f"{ROOT}/configs/quickstart.py:smoke")
    assert smoke.rounds == 2 and smoke.num_clients == 10


def test_client_fraction_wins_over_count():
    config = config_lib.base_config()
    config.update(num_clients=50, clients_per_round=3)
    assert config_lib.clients_per_round(config) == 3
    config.client_fraction = 0.1
    assert config_lib.clients_per_round(config) == 5
    config.client_fraction = 0.001
    assert config_lib.clients_per_round(config) == 1


def test_missing_config_file():
    with pytest.raises(ConfigError, match="nope.py"):
        config_lib.load_config("configs/nope.py:smoke")
