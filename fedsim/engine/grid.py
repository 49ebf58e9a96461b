"""Sweep cells that differ only in seeds or numeric hyper-parameters, trained as one vmapped program.

Each cell keeps its own ``Experiment``: data partition, initial state, PRNG keys and metrics. The round
and the personal evaluation are built once with the differing hyper-parameters as traced arrays and
``jax.vmap``-ed over a leading cell axis, so one compilation trains the whole grid. Arrays that are
equal in every cell (the pooled data, usually) are shared, not copied per cell. A cell's results equal
its own ``fedsim run`` up to float rounding.
"""

import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine.loop import Experiment, _zero_counters

# Keys a grid may vary: the seed (initial state and keys, made per cell outside the program) and
# float hyper-parameters the algorithms use only in arithmetic, so they can be traced.
GRID_KEYS = (
    "seed",
    "client_lr",
    "server_lr",
    "prox_mu",
    "ditto_lambda",
    "lambda_gl",
    "weight_decay",
)


class NotBatchable(Exception):
    """The cells cannot share one program (the message says why); run them one after another."""


class _Overlay:
    """``config`` with some keys replaced by (traced) values, read like the ConfigDict."""

    def __init__(self, config, values: dict):
        self._config, self._values = config, values

    def __getattr__(self, name):
        return self._values[name] if name in self._values else getattr(self._config, name)

    __getitem__ = __getattr__


def differing_keys(configs) -> list[str]:
    """Config keys whose value is not the same in every cell."""
    first = configs[0].to_dict()
    return sorted(k for k in first if any(c.to_dict()[k] != first[k] for c in configs[1:]))


def check_batchable(configs) -> None:
    """Raises ``NotBatchable`` unless ``configs`` differ only in ``GRID_KEYS`` on one device."""
    if len(configs) < 2:
        raise NotBatchable("a grid needs two or more cells")
    other = [k for k in differing_keys(configs) if k not in GRID_KEYS]
    if other:
        raise NotBatchable(f"cells differ in {', '.join(other)} (a grid varies {GRID_KEYS})")
    if configs[0].devices != 1:
        raise NotBatchable(f"devices={configs[0].devices} (a grid runs on one device)")


def _stack(arrays: list) -> tuple:
    """``(array, None)`` when every cell's array is the same, else ``(stacked, 0)``."""
    arrays = [np.asarray(a) for a in arrays]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise NotBatchable(f"cells' data differ in shape ({arrays[0].shape} vs others)")
    if all(np.array_equal(a, arrays[0]) for a in arrays[1:]):
        return jnp.asarray(arrays[0]), None
    return jnp.asarray(np.stack(arrays)), 0


def _stack_tree(trees: list) -> tuple:
    """``_stack`` leaf by leaf: ``(tree of arrays, tree of vmap axes)``."""
    structure = jax.tree.structure(trees[0])
    pairs = [_stack(list(leaves)) for leaves in zip(*map(jax.tree.leaves, trees), strict=True)]
    return structure.unflatten([p[0] for p in pairs]), structure.unflatten([p[1] for p in pairs])


class Grid:
    """The cells of ``configs`` (each a full experiment config) as one vmapped experiment."""

    def __init__(self, configs):
        check_batchable(configs)
        self.configs = configs
        self.experiments = [Experiment(c) for c in configs]
        traced = [k for k in differing_keys(configs) if k != "seed"]
        self.hparams = {k: jnp.asarray([c[k] for c in configs], jnp.float32) for k in traced}
        self.federation, self.federation_axes = _stack_tree(
            [e.federation() for e in self.experiments]
        )
        self.test, self.test_axes = _stack_tree(
            [
                (e.data.x_test, e.data.y_test, e.data.client_test_indices, e.data.num_test)
                for e in self.experiments
            ]
        )
        self.summaries: list[dict] = []
        self.final_states: list = []

    def _programs(self, hparams):
        first = self.experiments[0]
        return first.build_programs(_Overlay(first.config, hparams))

    def grid_round(self, hparams, server, clients, federation, round_index, keys, warmup=False):
        """One round of every cell: ``vmap`` of the round (``warmup``: the warm-up round) over the
        cell axis."""

        def one(hp, server, clients, federation, key):
            programs = self._programs(hp)
            round_fn = programs.warmup_fn if warmup else programs.round_fn
            return round_fn(server, clients, federation, round_index, key)

        return jax.vmap(one, in_axes=(0, 0, 0, self.federation_axes, 0))(
            hparams, server, clients, federation, keys
        )

    def grid_personal_eval(self, hparams, server, clients, federation, test, keys):
        """Every cell's personal evaluation (``fedsim.metrics.evaluate.build_personal_eval``);
        ``test`` is ``(x_test, y_test, client_test_indices, num_test)``, per cell or shared."""

        def one(hp, server, clients, federation, test, key):
            evaluate = self._programs(hp).personal_eval
            return evaluate(server, clients, federation, *test, key)

        in_axes = (0, 0, 0, self.federation_axes, self.test_axes, 0)
        return jax.vmap(one, in_axes=in_axes)(hparams, server, clients, federation, test, keys)

    def records(self) -> Iterator[tuple[int, list[dict | None]]]:
        """Runs every cell's rounds; yields ``(round, [metrics row or None per cell])``.

        ``self.summaries`` (one per cell, as ``Experiment.summary``) and ``self.final_states``
        (``(server_state, client_states)`` per cell) are set after the last round.
        """
        exps, first = self.experiments, self.experiments[0]
        t0 = time.perf_counter()
        cells = len(exps)
        stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
        server, clients = stack([e.init() for e in exps])
        keys = [e.keys() for e in exps]
        round_keys, personal_keys, warmup_keys = (stack([k[i] for k in keys]) for i in range(3))
        cell = lambda tree, g: jax.tree.map(lambda a: a[g], tree)
        # each cell's pooled test set (a view of the shared one where all cells have the same)
        pooled, pooled_axes = self.test[:2], self.test_axes[:2]
        cell_tests = [
            tuple(t if axis is None else t[g] for t, axis in zip(pooled, pooled_axes, strict=True))
            for g in range(cells)
        ]
        args = (self.hparams, server, clients, self.federation)
        round_fn = (
            jax.jit(self.grid_round).lower(*args, jnp.int32(0), round_keys).compile()
        )  # fmt: skip
        predict = (
            jax.jit(first.predict_correct).lower(cell(server.model, 0), *cell_tests[0]).compile()
        )
        personal_eval = None
        if first.personal_eval is not None:
            personal_eval = (
                jax.jit(self.grid_personal_eval).lower(*args, self.test, personal_keys).compile()
            )
        compile_s = time.perf_counter() - t0
        counters = [{k: v.item() for k, v in _zero_counters().items()} for _ in exps]
        if first.warmup_fn is not None:
            t_warmup = time.perf_counter()
            server, clients, m = jax.jit(self.grid_round, static_argnames="warmup")(
                *args, jnp.int32(0), warmup_keys, warmup=True
            )
            m = jax.device_get(m)
            share = (time.perf_counter() - t_warmup) / cells
            for g, e in enumerate(exps):
                e.account(counters[g], cell(m, g), share, e.warmup_epochs(e.algorithm))
        last = [None] * cells
        for r in range(first.config.rounds):
            t_round = time.perf_counter()
            server, clients, m = round_fn(
                self.hparams, server, clients, self.federation, jnp.int32(r), round_keys
            )
            m = jax.device_get(m)
            share = (time.perf_counter() - t_round) / cells
            for g, e in enumerate(exps):
                e.account(counters[g], cell(m, g), share)
            rows = [None] * cells
            if first.evaluates_after(r):
                personal = None
                if personal_eval is not None:
                    personal = jax.device_get(
                        personal_eval(self.hparams, server, clients, self.federation, self.test,
                                      personal_keys)
                    )  # fmt: skip
                wall_s = time.perf_counter() - t0
                for g, e in enumerate(exps):
                    own = None if personal is None else e.personal_metrics(*cell(personal, g))
                    rows[g] = e.round_metrics(
                        r, cell(m, g), cell(server, g), counters[g], wall_s,
                        (*cell_tests[g], predict), own,
                    )  # fmt: skip
                last = rows
            yield r + 1, rows
        wall_s = time.perf_counter() - t0
        for g, e in enumerate(exps):
            e.finish(last[g], counters[g], compile_s, wall_s)
        self.summaries = [e.summary for e in exps]
        self.final_states = [(cell(server, g), cell(clients, g)) for g in range(cells)]
