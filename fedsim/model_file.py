"""The trained server model as one file: ``model.msgpack`` (flax msgpack of ``{'params', 'state'}``).

A run writes it at the end; ``init_from`` starts another run from it (e.g. a truncated-SVD model from a
trained dense one). Factorised models are also written compacted (``model_compact.msgpack``): every
layer sliced to its kept rank, or merged back to a dense kernel where that is smaller — the model a
device would store.
"""

from pathlib import Path

import jax
import numpy as np
from flax import serialization

from fedsim.compress import lowrank
from fedsim.errors import ConfigError
from fedsim.models.base import ModelVars
from fedsim.models.layers import RANKS

MODEL_FILE = "model.msgpack"
COMPACT_FILE = "model_compact.msgpack"


def _write(path: Path, tree) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))
    tmp.replace(path)


def save_model(workdir: Path, model_vars: ModelVars) -> None:
    """Writes ``model.msgpack`` (and ``model_compact.msgpack`` for factorised models) in ``workdir``."""
    model_vars = jax.device_get(model_vars)
    _write(workdir / MODEL_FILE, {"params": model_vars.params, "state": model_vars.state})
    if RANKS in model_vars.state:
        ranks = lowrank.rank_vector(model_vars.state)
        state = {k: v for k, v in model_vars.state.items() if k != RANKS}
        compact = lowrank.compact(model_vars.params, ranks)
        _write(workdir / COMPACT_FILE, {"params": compact, "state": state})


def load_model(path: str) -> ModelVars:
    """The model in ``path`` (a ``model.msgpack`` or the workdir of a finished run)."""
    file = Path(path)
    if file.is_dir():
        file = file / MODEL_FILE
    if not file.is_file():
        raise ConfigError(f"init_from={path!r}: no {MODEL_FILE} there (a finished run writes one)")
    tree = serialization.msgpack_restore(file.read_bytes())
    return ModelVars(tree["params"], tree.get("state", {}))
