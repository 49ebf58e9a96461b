"""A peer simulator's worker (``pfl_worker.py``) run as a child process and timed round by round.

The host writes the federation fedsim trains on (pooled examples and client tables) to a folder,
starts the worker with the peer's interpreter, waits for its ``READY`` line and then asks it for
``ROUNDS n`` at a time, so its rounds can be interleaved with fedsim's (``fedsim.bench``).
"""

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim.errors import ConfigError

PFL_WORKER = Path(__file__).with_name("pfl_worker.py")


def missing_peer(python: str, modules: tuple[str, ...] = ("pfl", "torch")) -> str | None:
    """Why ``python`` cannot run the worker (one line), or None when it imports ``modules``."""
    try:
        probe = subprocess.run(
            [python, "-c", f"import {', '.join(modules)}"], capture_output=True, text=True
        )
    except OSError as err:
        return f"{python} cannot be run ({err.strerror})"
    if probe.returncode == 0:
        return None
    return f"{python} cannot import {' and '.join(modules)} (pip install 'fedsim[peers]')"


def write_federation(folder: Path, data) -> None:
    """``data``'s (a ``FederatedData``) training examples and client tables as the worker reads
    them."""
    np.save(folder / "x.npy", data.x_train)
    np.save(folder / "y.npy", data.y_train)
    np.save(folder / "client_indices.npy", data.client_indices)
    np.save(folder / "num_examples.npy", data.num_examples)


class PeerProcess:
    """A worker process holding one peer run; a context manager that stops it on exit."""

    def __init__(self, python: str, data, settings: dict, worker: Path = PFL_WORKER):
        self._python = python
        self._folder = tempfile.TemporaryDirectory(prefix="fedsim-peer-")
        write_federation(Path(self._folder.name), data)
        self._process = subprocess.Popen(
            [python, str(worker), self._folder.name, json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.info = json.loads(self._answer("READY"))

    def _answer(self, tag: str) -> str:
        """The rest of the worker's next line starting with ``tag`` (other lines are its logs);
        ``ConfigError`` naming the worker's exit status when it stops first."""
        for line in self._process.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1 :]
        raise ConfigError(
            f"the peer worker ({self._python}) exited with status {self._process.wait()} before "
            f"{tag}; its error is on stderr above"
        )

    def timer(self, rounds: int) -> Callable[[], float]:
        """A timer: each call runs ``rounds`` more peer rounds and returns the worker's seconds."""

        def seconds() -> float:
            self._process.stdin.write(f"ROUNDS {rounds}\n")
            self._process.stdin.flush()
            return float(self._answer("SECONDS"))

        return seconds

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._process.poll() is None:
            self._process.stdin.write("QUIT\n")
            self._process.stdin.close()
            self._process.wait()
        self._folder.cleanup()
