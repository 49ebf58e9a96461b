"""Orbax checkpoints of a run's whole state: server state, every client's state, counters.

Saves are synchronous and atomic (orbax writes a temporary directory and renames it), so a process
killed at any moment leaves the last finished checkpoint intact. Randomness needs no saving: every
key derives from the seed and the round index.

Every process of a multi-process run (``jax.distributed``) keeps its own checkpoints in its own
workdir: the state is replicated, so each saves its host copy without waiting for the others.
"""

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedsim.engine.loop import RunState


class Checkpoints:
    """The ``checkpoints/`` folder of a workdir, keeping the newest ``max_to_keep``."""

    def __init__(self, directory: Path, max_to_keep: int = 1):
        this_process = jax.process_index()
        directory = Path(directory).absolute()
        directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,
            enable_async_checkpointing=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=this_process, active_processes={this_process}
            ),
        )
        self._manager = ocp.CheckpointManager(
            directory,
            options=options,
            item_handlers=ocp.StandardCheckpointHandler(),  # so a fresh manager reads metadata
        )

    def latest_round(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: RunState) -> None:
        tree = jax.device_get({
            "server": state.server_state,
            "clients": state.client_states,
            "counters": state.counters,
        })  # fmt: skip
        self._manager.save(state.round, args=ocp.args.StandardSave(tree))
        self._manager.wait_until_finished()

    def restore_latest(self, abstract: RunState) -> RunState | None:
        """The newest checkpoint restored into ``abstract``'s structure, or None if there is none.
        A counter the checkpoint lacks (fedsim gained it since) restarts at zero."""
        step = self.latest_round()
        if step is None:
            return None
        saved = set(self._manager.item_metadata(step)["counters"].keys())
        target = {
            "server": abstract.server_state,
            "clients": abstract.client_states,
            "counters": {k: v for k, v in abstract.counters.items() if k in saved},
        }
        tree = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        zeros = {k: np.zeros(v.shape, v.dtype) for k, v in abstract.counters.items()}
        counters = {**zeros, **tree["counters"]}  # a counter fedsim gained since starts at zero
        return RunState(step, tree["server"], tree["clients"], counters)

    def close(self) -> None:
        self._manager.close()
