"""FedRep (Collins et al. 2021): the vmapped engine equals a plain per-client loop (head epochs with
the representation frozen, then the round's epochs with the head frozen; FedPer's server) on three toy
clients, and it runs from the CLI, under DP and as a vmapped sweep."""

import jax
import numpy as np
import optax
import pytest
import test_fedltn_reference
from test_engine_reference import BATCH, KEY, LR
from test_fedper import HEAD, check_against_reference, check_personal_sweep, run_smoke
from test_personalised_reference import local_batches, sgd

from fedsim.algorithms.fedrep import fedrep
from fedsim.data.batching import client_batches

toy = test_fedltn_reference.toy  # three clients with validation splits, TinyBN
HEAD_EPOCHS = 3


def head_batches(fed, r, c, per_round):
    """Client ``c``'s head epochs: its examples reshuffled under ``fold_in(task key, 1)``, the task
    key being the second half of its round key's split."""
    client_key = jax.random.split(jax.random.fold_in(KEY, r))[1]
    task_key = jax.random.split(jax.random.fold_in(client_key, c))[1]
    n = int(fed.num_examples[c])
    batch_key = jax.random.split(jax.random.fold_in(task_key, 1))[0]
    idx, ok = client_batches(
        batch_key, fed.client_indices[c], n, epochs=HEAD_EPOCHS, batch_size=BATCH
    )
    return [row[m] for row, m in zip(np.asarray(idx), np.asarray(ok), strict=True) if m.any()]


def alternating(model, fed, start, state, r, c, per_round):
    """SGD on the head alone over the head epochs, then on the rest over the round's batches."""
    on_head = {k: jax.tree.map(lambda p, k=k: np.full(np.shape(p), float(k == HEAD)), v)
               for k, v in start.items()}  # fmt: skip
    w, s = sgd(model, fed, start, state, head_batches(fed, r, c, per_round), on_head)
    off_head = jax.tree.map(lambda m: 1 - m, on_head)
    return sgd(model, fed, w, s, local_batches(fed, r, c, per_round), off_head)


def test_fedrep_matches_python_loop(toy):
    algorithm = fedrep(toy[1], optax.sgd(LR), head_epochs=HEAD_EPOCHS)
    check_against_reference(algorithm, toy, 2, 2, alternating)


@pytest.mark.parametrize("extra", [[], ["--config.dp_clip=1.0"]])
def test_fedrep_runs_from_the_cli(tmp_path, extra):
    run_smoke(tmp_path, "fedrep", "--config.fedrep.head_epochs=2", *extra)


def test_fedrep_sweep_is_one_vmapped_grid(tmp_path, capsys):
    cells = '[{"algorithm": "fedrep", "fedrep.head_epochs": 2, "fedrep.server_lr": s} '
    check_personal_sweep(tmp_path, capsys, cells + "for s in (0.5, 1.0)]")
