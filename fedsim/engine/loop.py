"""The one run loop: the rounds of one experiment or of a grid of them, as a generator of records.

``run(experiments)`` compiles the programs once, runs the warm-up round (if the algorithm has one)
and the rounds, evaluates every ``eval_every`` rounds and yields a ``Record`` per round. A single
experiment is a grid of one: its programs are jitted as they are; several experiments (cells that
differ only in seeds and traced hyper-parameters, ``fedsim.engine.grid``) run as the same programs
``vmap``-ed over a leading cell axis. The last record carries every cell's summary. No file I/O:
the driver (``fedsim.driver``) and notebooks consume the records.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine import grid, sharding
from fedsim.engine.programs import Programs, warmup_epochs
from fedsim.engine.setup import (
    Experiment,
    federation,
    init_states,
    programs,
    run_keys,
)
from fedsim.metrics import evaluate, report


class RunState(NamedTuple):
    """Everything a run needs to continue after ``round`` rounds (what a checkpoint holds)."""

    round: int
    server_state: Any
    client_states: Any
    counters: dict  # 0-d numpy arrays: cumulative bytes, samples, failures, seconds


class Record(NamedTuple):
    """One finished round of every cell."""

    round: int
    rows: list  # per cell: the metrics.jsonl row on evaluation rounds, else None
    global_acc: list  # per cell: the latest evaluated accuracy (None before the first evaluation)
    traffic_mb: list  # per cell: cumulative up + down MB
    state: Callable[[int], RunState]  # cell g's state after this round
    personal_acc: list  # per cell: every client's accuracy at the latest evaluation
    summaries: list | None  # per cell, on the last round only: the run's summary
    loss: (
        list  # per cell: this round's mean training loss over the clients that succeeded (or None)
    )

    @property
    def metrics(self) -> dict | None:
        """The first cell's row: a single run's metrics on evaluation rounds, else None."""
        return self.rows[0]


def abstract_state(experiment: Experiment) -> RunState:
    """Shapes and dtypes of a ``RunState`` (the target a checkpoint is restored into)."""
    algorithm = experiment.make_algorithm(experiment.values)
    server, clients = jax.eval_shape(lambda: init_states(experiment, algorithm))
    zero = report.zero_counters(experiment.settings.num_clients)
    counters = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for k, v in zero.items()}
    return RunState(0, server, clients, counters)


class _Cells:
    """G experiments as one program: G = 1 jits its own programs, G > 1 vmaps them over cells."""

    def __init__(self, experiments: Sequence[Experiment]):
        self.experiments, self.size = list(experiments), len(experiments)
        first = self.experiments[0]
        self.programs = programs(first)
        feds = [federation(e) for e in self.experiments]
        tests = [_test_arrays(e) for e in self.experiments]
        if self.size == 1:
            self.federation, self.test = feds[0], tests[0]
            self.fed_axes = self.test_axes = None
            self.traced = {}
            return
        grid.check_batchable([e.config for e in self.experiments])
        self.federation, self.fed_axes = grid.stack_tree(feds)
        self.test, self.test_axes = grid.stack_tree(tests)
        keys = [k for k in grid.differing_keys([e.config for e in experiments]) if k != "seed"]
        self.traced = grid.stack_values([{k: e.values[k] for k in keys} for e in experiments])

    def cell(self, tree, g: int):
        return tree if self.size == 1 else jax.tree.map(lambda a: a[g], tree)

    def stack(self, trees: list):
        return trees[0] if self.size == 1 else jax.tree.map(lambda *a: jnp.stack(a), *trees)

    def lift(self, pick: Callable[[Programs], Callable], data_axes: tuple) -> Callable:
        """``pick(programs)`` of the one cell, or vmapped over the cells' states, data and key
        (``fn(server, clients, *data, key)``) with each cell's traced values."""
        if self.size == 1:
            return pick(self.programs)
        first, constant = self.experiments[0], self.experiments[0].values

        def one(traced, server, clients, *rest):
            return pick(programs(first, {**constant, **traced}))(server, clients, *rest)

        vmapped = jax.vmap(one, in_axes=(0, 0, 0, *data_axes, 0))
        return lambda *args: vmapped(self.traced, *args)


def _test_arrays(experiment: Experiment) -> tuple:
    """``(x_test, y_test, client_test_indices, num_test)`` on the device."""
    d = experiment.data
    return tuple(map(jnp.asarray, (d.x_test, d.y_test, d.client_test_indices, d.num_test)))


def _compile(fn, *args):
    donate = (0, 1) if jax.default_backend() != "cpu" else ()
    return jax.jit(fn, donate_argnums=donate).lower(*args).compile()


def run(
    experiments: Experiment | Sequence[Experiment], start: RunState | None = None
) -> Iterator[Record]:
    """Runs the rounds of ``experiments`` (one, or a grid; ``start`` resumes a single run) and
    yields one ``Record`` per round."""
    t0 = time.perf_counter()
    cells = _Cells([experiments] if isinstance(experiments, Experiment) else experiments)
    exps, first = cells.experiments, cells.experiments[0]
    start = start or _initial_state(cells)
    counters = [report.on_host(start.counters) for _ in exps]
    server, clients, cells.federation, cells.test = sharding.replicate(
        (start.server_state, start.client_states, cells.federation, cells.test),
        first.settings.mesh,
    )
    keys = [cells.stack([run_keys(e)[i] for e in exps]) for i in range(3)]
    compiled = _compiled(cells, server, clients, keys, warmup=start.round == 0)
    compile_s = time.perf_counter() - t0
    elapsed = lambda g: counters[g]["elapsed_s"] + time.perf_counter() - t0
    if compiled["warmup"] is not None:
        server, clients = _warm_up(cells, compiled["warmup"], server, clients, keys, counters)
    latest, personal_acc = [None] * cells.size, [None] * cells.size
    for r in range(start.round, first.rounds):
        t_round = time.perf_counter()
        server, clients, m = compiled["round"](
            server, clients, cells.federation, jnp.int32(r), keys[0]
        )
        m = jax.device_get(m)
        share = (time.perf_counter() - t_round) / cells.size
        for g, e in enumerate(exps):
            report.account(counters[g], cells.cell(m, g), share, e.settings.local_epochs)
        rows = [None] * cells.size
        if _evaluates_after(first, r):
            rows, personal_acc = _evaluate(
                cells, compiled, server, clients, keys[1], m, r, counters, elapsed
            )
            latest = rows
        snapshot = (
            server,
            clients,
            [report.as_arrays(c) for c in counters],
            [elapsed(g) for g in range(cells.size)],
        )
        last = r + 1 == first.rounds
        yield Record(
            r + 1,
            rows,
            [None if row is None else row["global_acc"] for row in latest],
            [(c["up_bytes"] + c["down_bytes"]) / 1e6 for c in counters],
            lambda g, s=snapshot, n=r + 1: _state(cells, s, g, n),
            personal_acc,
            _summaries(cells, latest, counters, compile_s, elapsed) if last else None,
            [report.train_loss(cells.cell(m, g)) for g in range(cells.size)],
        )


def _initial_state(cells: _Cells) -> RunState:
    """Every cell's initial server and client states (stacked for a grid) and zero counters."""
    states = [init_states(e, e.make_algorithm(e.values)) for e in cells.experiments]
    server = cells.stack([s for s, _ in states])
    clients = cells.stack([c for _, c in states])
    num_clients = cells.experiments[0].settings.num_clients
    return RunState(0, server, clients, report.zero_counters(num_clients))


def _state(cells: _Cells, snapshot, g: int, round_number: int) -> RunState:
    server, clients, counters, elapsed = snapshot
    arrays = {**report.as_arrays(counters[g]), "elapsed_s": np.asarray(elapsed[g])}
    return RunState(round_number, cells.cell(server, g), cells.cell(clients, g), arrays)


def _evaluates_after(experiment: Experiment, r: int) -> bool:
    """Whether round ``r`` (0-based) ends with an evaluation."""
    return (r + 1) % experiment.eval_every == 0 or r + 1 == experiment.rounds


def _compiled(cells: _Cells, server, clients, keys, warmup: bool) -> dict:
    """The compiled round, global predictor, personal evaluation and (``warmup``) warm-up round."""
    first, p, fed, test = cells.experiments[0], cells.programs, cells.federation, cells.test
    round_fn = cells.lift(lambda q: q.round_fn, (cells.fed_axes, None))
    out = {"round": _compile(round_fn, server, clients, fed, jnp.int32(0), keys[0])}
    predict = evaluate.build_predict_correct(first.model, first.eval_batch_size)
    sample = (cells.cell(server.model, 0), *_cell_test(cells, 0)[:2])
    out["predict"] = jax.jit(predict).lower(*sample).compile()
    out["personal"] = out["warmup"] = None
    if p.personal_eval is not None:
        test_axes = (None,) * 4 if cells.test_axes is None else tuple(cells.test_axes)
        personal = cells.lift(lambda q: q.personal_eval, (cells.fed_axes, *test_axes))
        out["personal"] = _compile(personal, server, clients, fed, *test, keys[1])
    if warmup and p.warmup_fn is not None:
        warm = cells.lift(lambda q: q.warmup_fn, (cells.fed_axes, None))
        out["warmup"] = _compile(warm, server, clients, fed, jnp.int32(0), keys[2])
    return out


def _cell_test(cells: _Cells, g: int) -> tuple:
    """Cell ``g``'s test arrays (a view of the shared one where every cell has the same)."""
    if cells.size == 1:
        return cells.test
    return tuple(t if a is None else t[g] for t, a in zip(cells.test, cells.test_axes, strict=True))


def _warm_up(cells: _Cells, warmup, server, clients, keys, counters):
    """Runs the compiled warm-up round once and accounts its traffic, samples and time."""
    t_warmup = time.perf_counter()
    server, clients, m = warmup(server, clients, cells.federation, jnp.int32(0), keys[2])
    m = jax.device_get(m)
    share = (time.perf_counter() - t_warmup) / cells.size
    for g, e in enumerate(cells.experiments):
        epochs = warmup_epochs(cells.programs.algorithm, e.settings)
        report.account(counters[g], cells.cell(m, g), share, epochs)
    return server, clients


def _evaluate(cells: _Cells, compiled: dict, server, clients, key, m, r: int, counters, elapsed):
    """Every cell's metrics row after round ``r``, and every client's personal accuracy."""
    personal = None
    if compiled["personal"] is not None:
        args = (server, clients, cells.federation, *cells.test, key)
        personal = jax.device_get(compiled["personal"](*args))
    rows, accuracies = [], []
    for g, e in enumerate(cells.experiments):
        own = None if personal is None else cells.cell(personal, g)
        scores, extra = _scores(e, cells, compiled["predict"], cells.cell(server, g), g, own, r + 1)
        row = report.round_row(r + 1, cells.cell(m, g), scores, counters[g], elapsed(g))
        rows.append({**row, **extra})
        accuracies.append(scores["personal_acc"])
    return rows, accuracies


def _scores(experiment: Experiment, cells: _Cells, predict, server_state, g, personal, rounds):
    """``(scores, extra)``: the server model on the pooled test set (personal models where the
    algorithm deploys them) and the mechanism's, the algorithm's and its sub-models' own metrics."""
    x_test, y_test = _cell_test(cells, g)[:2]
    correct = np.asarray(predict(server_state.model, x_test, y_test))
    scores = report.server_model_scores(correct, experiment.data, server_state.model)
    personal_scores = None
    if personal is not None:
        personal_scores = report.personal_model_scores(*personal, experiment.data.num_test)
        scores.update(report.personal_overrides(personal_scores))
    algorithm = cells.programs.algorithm
    extra = {"epsilon": None if experiment.privacy is None else experiment.privacy.epsilon(rounds)}
    if algorithm.report is not None:
        extra.update(algorithm.report(server_state, personal_scores))
    extra.update(report.last_position_metrics(correct))
    extra.update(report.submodel_metrics(algorithm, server_state, x_test, y_test, predict))
    return scores, extra


def _summaries(cells: _Cells, last: list, counters: list, compile_s: float, elapsed) -> list:
    """Every cell's summary: its last evaluation plus its totals."""
    out = []
    for g, e in enumerate(cells.experiments):
        noise = e.privacy.settings.noise_multiplier if e.privacy else None
        out.append(
            report.summary(
                last[g], counters[g], compile_s=compile_s, wall_s=elapsed(g), rounds=e.rounds,
                noise=noise, poisoned=e.poisoned_clients, attackers=e.settings.faults.attackers,
            )
        )  # fmt: skip
    return out
