"""Train once, deploy everywhere: one trained factorised model cut to any MAC budget without
fine-tuning (Horváth et al., 'Maestro', ICML 2024: ranks removed greedily, the loss scored on one
batch of training data).

The official code does not release this step; fedsim's rule: each move drops the last slots of the
layer whose drop raises the calibration loss least per MAC saved. A layer stored dense
(``r (n + m) > n m``, ``fedsim.compress.lowrank.compact``) saves nothing until its rank reaches the
point where the factored form is cheaper, so its move jumps there. Applied the same way to a
Maestro model and to the SVD of a dense one, the two curves compare what training bought.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class TruncationPoint(NamedTuple):
    """One model on the greedy path: its kept ranks ``[L]``, MACs per example and calibration loss."""

    ranks: np.ndarray
    macs: int
    loss: float


def candidate_moves(ranks: np.ndarray, macs_at: Callable, step: int) -> list[np.ndarray]:
    """One move per layer above rank 1: ``step`` slots fewer, or further down to the first rank whose
    MACs are lower than now (a layer in its dense form); at least rank 1."""
    now = macs_at(ranks)
    moves = []
    for layer in np.flatnonzero(ranks > 1):
        trial = ranks.copy()
        trial[layer] = max(1, ranks[layer] - step)
        while trial[layer] > 1 and macs_at(trial) >= now:
            trial[layer] -= 1
        if macs_at(trial) < now:
            moves.append(trial)
    return moves


def greedy_path(
    loss_at: Callable, macs_at: Callable, start: np.ndarray, step: int = 1
) -> list[TruncationPoint]:
    """From ``start`` ranks, the models reached by repeatedly taking the move of ``candidate_moves``
    with the smallest loss increase per MAC saved, until no move saves MACs.

    ``loss_at(ranks [K, L]) -> losses [K]`` scores K candidates at once (e.g. a vmapped, jitted
    cross-entropy on one training batch); ``macs_at(ranks [L]) -> int``. ``step`` slots per move
    trades resolution for ``step`` times fewer loss evaluations."""
    ranks = np.asarray(start, np.int32).copy()
    loss = float(loss_at(ranks[None])[0])
    path = [TruncationPoint(ranks, int(macs_at(ranks)), loss)]
    while moves := candidate_moves(ranks, macs_at, step):
        losses = np.asarray(loss_at(np.stack(moves)))
        macs = np.array([macs_at(m) for m in moves])
        best = int(np.argmin((losses - loss) / (path[-1].macs - macs)))
        ranks, loss = moves[best], float(losses[best])
        path.append(TruncationPoint(ranks, int(macs[best]), loss))
    return path


def ranks_within(path: list[TruncationPoint], budget: int) -> np.ndarray | None:
    """The ranks of the first point of ``path`` whose MACs fit ``budget`` (None if none does)."""
    return next((p.ranks for p in path if p.macs <= budget), None)
