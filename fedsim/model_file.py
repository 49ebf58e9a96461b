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

MODEL_FILE = "model.msgpack"
COMPACT_FILE = "model_compact.msgpack"


def _serialize(params, state) -> bytes:
    tree = {"params": params, "state": state}
    return serialization.msgpack_serialize(jax.tree.map(np.asarray, tree))


def model_files(model_vars: ModelVars) -> dict[str, bytes]:
    """``{file name: content}``: ``model.msgpack``, and ``model_compact.msgpack`` for factorised
    models (the driver writes them into the workdir)."""
    model_vars = jax.device_get(model_vars)
    files = {MODEL_FILE: _serialize(model_vars.params, model_vars.state)}
    if lowrank.RANKS in model_vars.state:
        compact = lowrank.compact(model_vars.params, lowrank.rank_vector(model_vars.state))
        files[COMPACT_FILE] = _serialize(compact, lowrank.without_ranks(model_vars.state))
    return files


def load_model(path: str) -> ModelVars:
    """The model in ``path`` (a ``model.msgpack`` or the workdir of a finished run)."""
    file = Path(path)
    if file.is_dir():
        file = file / MODEL_FILE
    if not file.is_file():
        raise ConfigError(f"init_from={path!r}: no {MODEL_FILE} there (a finished run writes one)")
    tree = serialization.msgpack_restore(file.read_bytes())
    return ModelVars(tree["params"], tree.get("state", {}))
