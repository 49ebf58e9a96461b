"""``fedsim.peers.process``: the worker protocol (READY, ROUNDS n -> SECONDS s, QUIT) against a
stand-in worker, the federation files it is given, and the one-line reason a peer is missing."""

import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.peers.process import PeerProcess, missing_peer

STAND_IN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    folder, settings = Path(sys.argv[1]), json.loads(sys.argv[2])
    sizes = np.load(folder / "num_examples.npy")
    print("a log line the host skips")
    print("READY", json.dumps({"clients": len(sizes), "x": list(np.load(folder / "x.npy").shape),
                               "folder": str(folder), **settings}), flush=True)
    for line in sys.stdin:
        command, *count = line.split()
        if command == "QUIT":
            break
        print("SECONDS", 0.25 * int(count[0]), flush=True)
    """
)


def test_peer_process_speaks_the_worker_protocol(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(STAND_IN)
    data = SimpleNamespace(
        x_train=np.zeros((6, 4, 4, 1), np.float32), y_train=np.arange(6) % 2,
        client_indices=np.array([[0, 1, 2], [3, 4, 0]]), num_examples=np.array([3, 2]),
    )  # fmt: skip
    with PeerProcess(sys.executable, data, {"seed": 3}, worker=worker) as peer:
        assert peer.info["clients"] == 2 and peer.info["x"] == [6, 4, 4, 1]
        assert peer.info["seed"] == 3
        timer = peer.timer(2)
        assert [timer(), timer()] == [0.5, 0.5]
    assert not Path(peer.info["folder"]).exists()


def test_missing_peer_names_the_interpreter_and_what_it_lacks():
    assert missing_peer(sys.executable, ("json",)) is None
    reason = missing_peer(sys.executable, ("no_such_module_here",))
    assert sys.executable in reason and "no_such_module_here" in reason and "\n" not in reason
    assert "cannot be run" in missing_peer("/no/such/python")


def test_a_worker_that_dies_is_one_config_error(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text("import sys; sys.exit(3)")
    data = SimpleNamespace(x_train=np.zeros((1, 1)), y_train=np.zeros(1), client_indices=np.zeros((1, 1)),
                           num_examples=np.ones(1))  # fmt: skip
    with pytest.raises(ConfigError, match="exited with status 3 before READY"):
        PeerProcess(sys.executable, data, {}, worker=worker)
