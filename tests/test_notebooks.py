"""Every notebook runs top to bottom (smoke settings); a failing cell fails the test."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = (
    "quickstart.ipynb",
    "fedltn.ipynb",
    "maestro.ipynb",
)  # fedltn: the nine methods of configs/fedltn.py
CELL_TIMEOUT_S = 900  # fedltn.ipynb runs all nine methods in one cell, mostly XLA compilation


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("FEDSIM_NOTEBOOK_SMOKE", "1")
    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources=resources
    ).execute()


@pytest.mark.parametrize("name", EXPECTED)
def test_notebooks_are_found(name):
    assert any(p.name == name for p in NOTEBOOKS)
