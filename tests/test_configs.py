"""Every committed config file loads, its smoke loads, and every cell of its sweep is a valid
config (a misspelt key or value in a grid fails here, not hours into the grid)."""

from pathlib import Path

import pytest

from fedsim import config as config_lib
from fedsim.engine.setup import check_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_and_its_smoke_are_valid(path):
    check_config(config_lib.load_config(str(path)))
    check_config(config_lib.load_config(f"{path}:smoke"))


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if hasattr(config_lib.config_module(p), "get_sweep")],
    ids=lambda p: p.name,
)  # fmt: skip
def test_every_sweep_cell_is_valid(path):
    base = config_lib.load_config(str(path))
    for cell in config_lib.sweep_cells(str(path)):
        check_config(config_lib.with_overrides(base, cell))
