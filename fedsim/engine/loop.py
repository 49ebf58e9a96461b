"""An experiment built from a config, and its rounds as a generator of records (no file I/O here).

``Experiment(config)`` validates the config, builds the federation, model, algorithm and the jitted
round, and ``experiment.records()`` runs the rounds, yielding one ``Record`` per round with the
contract's metrics on evaluation rounds. The CLI driver and notebooks consume the same generator.
"""

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim import algorithms, model_file, models, privacy
from fedsim import config as config_lib
from fedsim.algorithms import FederatedAlgorithm
from fedsim.algorithms.base import Dataset, PersonalScores
from fedsim.compress import lowrank
from fedsim.data import datasets, partition, shakespeare, validate
from fedsim.data.federated import FederatedData, hold_out_validation, make_federation
from fedsim.engine import faults, sharding
from fedsim.engine.round import Federation, build_round_fn, resolve_chunk_size
from fedsim.errors import ConfigError
from fedsim.metrics import evaluate
from fedsim.models.base import ModelVars

NATURAL = ("shakespeare",)
REGISTRIES = {
    "algorithm": algorithms.ALGORITHMS,
    "model": models.MODELS,
    "partition": (*partition.PARTITIONERS, "natural"),
}


class RunState(NamedTuple):
    """Everything a run needs to continue after ``round`` rounds (what a checkpoint holds)."""

    round: int
    server_state: Any
    client_states: Any
    counters: dict  # 0-d numpy arrays: cumulative bytes, samples, failures, seconds


class Programs(NamedTuple):
    """An experiment's pure functions: jit them for one run, vmap them for a grid of runs."""

    algorithm: FederatedAlgorithm
    round_fn: Callable  # fedsim.engine.round.build_round_fn
    personal_eval: Callable | None  # fedsim.metrics.evaluate.build_personal_eval
    warmup_fn: Callable | None  # the algorithm's Warmup round (all clients), once before round 1


class Record(NamedTuple):
    """One finished round: ``metrics`` holds the contract fields on evaluation rounds, else None."""

    round: int
    metrics: dict | None
    global_acc: float | None  # latest evaluated accuracy, for progress display
    traffic_mb: float  # cumulative up + down
    state: RunState


def federation_from_config(config) -> FederatedData:
    """Validates ``config`` and builds its checked federation (no model, nothing compiled)."""
    config_lib.validate(config, registries=REGISTRIES)
    privacy.validate(config)
    if config.dataset in NATURAL or config.partition == "natural":
        return _natural_federation(config)
    data_seed = config_lib.data_seed(config)
    dataset = datasets.load_dataset(
        config.dataset, seed=data_seed, path=config.data_path, data_dir=config.data_dir
    )
    dataset = datasets.subsample_train(dataset, config.train_examples, data_seed)
    validate.check_labels(dataset)
    if config.num_clients > len(dataset.y_train):
        raise ConfigError(
            f"num_clients={config.num_clients} exceeds the {len(dataset.y_train)} training "
            f"examples of dataset {config.dataset!r}"
        )
    data = make_federation(
        dataset,
        config.partition,
        config.num_clients,
        data_seed,
        alpha=config.alpha,
        min_size=config.min_client_size,
        shards_per_client=config.shards_per_client,
        labels_per_client=config.labels_per_client,
        beta=config.beta,
        num_classes=dataset.num_classes,
    )
    validate.check_federation(data)
    return data


def _natural_federation(config) -> FederatedData:
    """Datasets with their own clients (Shakespeare roles) keep them: ``partition='natural'``."""
    if config.dataset not in NATURAL or config.partition != "natural":
        raise ConfigError(
            f"dataset={config.dataset!r} with partition={config.partition!r}: the natural partition "
            f"needs a dataset with its own clients ({', '.join(NATURAL)}), and those need it"
        )
    source = shakespeare.load_shakespeare(
        num_clients=config.num_clients,
        seed=config_lib.data_seed(config),
        max_windows_per_client=config.max_windows_per_client or None,
    )
    validate.check_labels(source.to_array_dataset())
    data = source.federated()
    validate.check_federation(data)
    return data


class Experiment:
    """Everything one run needs, built from a config (see ``fedsim.config``)."""

    def __init__(self, config):
        self.config = config
        self.data = federation_from_config(config)
        data_seed = config_lib.data_seed(config)
        self.data, self.poisoned_clients = faults.poison_clients(
            self.data, config.poison_fraction, data_seed
        )
        self.data = hold_out_validation(self.data, config.val_fraction, data_seed)
        try:
            self.model = models.get_model(
                config.model, self.data.num_classes, **config.model_kwargs
            )
        except TypeError as err:
            raise ConfigError(
                f"model_kwargs={dict(config.model_kwargs)} for model={config.model!r}: {err}"
            ) from None
        self.clients_per_round = config_lib.clients_per_round(config)
        self.privacy = privacy.from_config(config, self.clients_per_round)
        if self.privacy is not None:
            privacy.check_wrappable(
                algorithms.get_algorithm(config, self.model, config.num_clients),
                jax.eval_shape(self.model.init, jax.random.PRNGKey(0), self.data.x_train[:1]),
                Dataset(self.data.x_train, self.data.y_train),
            )
        self.mesh = sharding.client_mesh(config.devices)
        devices = 1 if self.mesh is None else self.mesh.size
        self.chunk_size = resolve_chunk_size(
            config.chunk_size, -(-self.clients_per_round // devices), jax.default_backend()
        )
        programs = self.build_programs(config)
        self.algorithm, self.round_fn, self.personal_eval, self.warmup_fn = programs
        self.start_model = None
        if config.init_from:
            self.start_model = model_file.load_model(config.init_from)
            self._check_start_model()
        self.personal_acc = None
        self.predict_correct = evaluate.build_predict_correct(self.model, config.eval_batch_size)

    def build_programs(self, config) -> Programs:
        """The algorithm, round and personal evaluation of ``config`` for this experiment's data and
        model. ``config`` may hold traced hyper-parameters (``fedsim.engine.grid`` vmaps over them)."""
        algorithm = privacy.wrap(
            algorithms.get_algorithm(config, self.model, config.num_clients),
            self.privacy,
            config.seed,
        )
        round_fn = build_round_fn(
            algorithm,
            num_clients=config.num_clients,
            clients_per_round=self.clients_per_round,
            chunk_size=self.chunk_size,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            faults=faults.Faults(
                config.dropout_prob, config.straggler_fraction, config.straggler_work
            ),
            sampling=config.client_sampling,
            mesh=self.mesh,
        )
        personal_eval = None
        if algorithm.personalize is not None:
            personal_eval = evaluate.build_personal_eval(
                self.model,
                algorithm.personalize,
                epochs=config.finetune_epochs,
                batch_size=config.batch_size,
                chunk=self.chunk_size,
            )
        warmup_fn = None
        if algorithm.warmup is not None:
            warmup_fn = build_round_fn(
                algorithm.warmup.algorithm,
                num_clients=config.num_clients,
                clients_per_round=config.num_clients,
                chunk_size=self.chunk_size,
                local_epochs=self.warmup_epochs(algorithm),
                batch_size=config.batch_size,
                mesh=self.mesh,
            )
        return Programs(algorithm, round_fn, personal_eval, warmup_fn)

    def initial_model(self):
        """The seed's initialisation, or the ``init_from`` model (factorised by SVD for a factorised
        model, truncated to ``init_params_budget`` parameters when that is > 0)."""
        init_key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0)
        model_vars = self.model.init(init_key, jnp.asarray(self.data.x_train[:1]))
        if self.start_model is None:
            return model_vars
        start = self.start_model
        if lowrank.layer_paths(model_vars.params):
            params = lowrank.factorize(start.params, model_vars.params)
            ranks = lowrank.full_ranks(params)
            if self.config.init_params_budget:
                ranks = lowrank.ranks_for_budget(params, self.config.init_params_budget)
            state = {**start.state, lowrank.RANKS: model_vars.state[lowrank.RANKS]}
            start = ModelVars(params, lowrank.with_rank_vector(state, ranks))
        return jax.tree.map(jnp.asarray, start)

    def init(self):
        """``(server_state, client_states)`` from the seed; client state stacked ``[C, ...]``."""
        model_vars = self.initial_model()
        server_state = self.algorithm.server_init(model_vars)
        one = self.algorithm.client_init(model_vars)
        client_states = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (self.config.num_clients,) + leaf.shape), one
        )
        return server_state, client_states

    def _check_start_model(self):
        """Raises ConfigError unless ``init_from`` holds this dense architecture's variables."""
        sample = jnp.asarray(self.data.x_train[:1])
        expected = jax.eval_shape(self.model.init, jax.random.PRNGKey(0), sample)
        if lowrank.layer_paths(expected.params):
            expected = expected._replace(
                params=lowrank.dense_shapes(expected.params),
                state=lowrank.without_ranks(expected.state),
            )
        shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
        if shapes(expected) != shapes(self.start_model):
            raise ConfigError(
                f"init_from={self.config.init_from!r} holds a model that does not match "
                f"model={self.config.model!r} with model_kwargs={dict(self.config.model_kwargs)} "
                "(init_from takes a dense run of the same architecture)"
            )

    def federation(self) -> Federation:
        d = self.data
        validation = () if d.num_val is None else (d.client_val_indices, d.num_val)
        return Federation(
            *map(
                jnp.asarray,
                (d.x_train, d.y_train, d.client_indices, d.num_examples, *validation),
            )
        )

    def evaluate(self, model_vars, x_test, y_test, predict_correct=None) -> dict:
        """Global and personal accuracy of a model every client deploys."""
        predict_correct = predict_correct or self.predict_correct
        correct = np.asarray(predict_correct(model_vars, x_test, y_test))
        personal = evaluate.per_client_accuracy(
            correct, self.data.client_test_indices, self.data.num_test
        )
        params, size = (int(n) for n in lowrank.deployed_size(model_vars))
        return {
            "global_acc": float(correct.mean()),
            "personal_acc": personal,
            "model_mb": size / 1e6,
            "model_mb_values": size / 1e6,
            "density": params / lowrank.dense_params(model_vars.params),
            "params": params,
        }

    def evaluate_submodels(self, server_state, x_test, y_test, predict) -> dict:
        """``acc_<name>``, ``params_<name>``, ``model_mb_<name>``, ``round_mb_<name>`` (per client of
        that kind, down + up) and ``macs_<name>`` of every sub-model the algorithm serves."""
        if self.algorithm.submodels is None:
            return {}
        out = {}
        for name, sub in self.algorithm.submodels(server_state, x_test[:1]).items():
            out[f"acc_{name}"] = float(np.asarray(predict(sub.model, x_test, y_test)).mean())
            out[f"params_{name}"] = int(sub.params)
            out[f"model_mb_{name}"] = int(sub.model_bytes) / 1e6
            out[f"round_mb_{name}"] = int(sub.round_bytes) / 1e6
            out[f"macs_{name}"] = int(sub.macs)
        return out

    def privacy_metrics(self, rounds: int) -> dict:
        """``epsilon`` spent after ``rounds`` rounds at ``dp_delta``."""
        return {"epsilon": None if self.privacy is None else self.privacy.epsilon(rounds)}

    def keys(self):
        """``(round_key, personal_eval_key, warmup_key)`` of this run's seed."""
        seed = jax.random.PRNGKey(self.config.seed)
        return tuple(jax.random.fold_in(seed, i) for i in (1, 2, 3))

    def personal_metrics(self, hits, model_bytes, values_bytes, density) -> dict:
        """Each client's own deployed model on its own test split, and what it stores, from the
        host arrays ``personal_eval`` returns."""
        personal_acc = hits / np.maximum(self.data.num_test, 1)
        return {
            "personal_acc": personal_acc,
            "model_mb": float(model_bytes.astype(np.float64).mean()) / 1e6,
            "model_mb_values": float(values_bytes.astype(np.float64).mean()) / 1e6,
            "density": float(density.mean()),
            "scores": PersonalScores(personal_acc, model_bytes, values_bytes, density),
        }

    def abstract_state(self) -> "RunState":
        """Shapes and dtypes of a ``RunState`` (the target a checkpoint is restored into)."""
        server, clients = jax.eval_shape(self.init)
        counters = {k: jax.ShapeDtypeStruct((), v.dtype) for k, v in _zero_counters().items()}
        return RunState(0, server, clients, counters)

    def records(self, start: "RunState | None" = None) -> Iterator[Record]:
        """Runs the rounds (from ``start`` when resuming); yields a Record per round.

        ``self.summary`` is set after the last round.
        """
        c = self.config
        t0 = time.perf_counter()
        if start is None:
            start = RunState(0, *self.init(), _zero_counters())
        server_state, client_states, federation, x_test, y_test = sharding.replicate(
            (
                start.server_state,
                start.client_states,
                self.federation(),
                jnp.asarray(self.data.x_test),
                jnp.asarray(self.data.y_test),
            ),
            self.mesh,
        )
        counters = {k: v.item() for k, v in start.counters.items()}
        elapsed = lambda: counters["elapsed_s"] + time.perf_counter() - t0
        key, personal_key, warmup_key = self.keys()
        donate = (0, 1) if jax.default_backend() != "cpu" else ()
        round_fn = (
            jax.jit(self.round_fn, donate_argnums=donate)
            .lower(server_state, client_states, federation, jnp.int32(0), key)
            .compile()
        )
        predict = jax.jit(self.predict_correct).lower(server_state.model, x_test, y_test).compile()
        test = (x_test, y_test) + sharding.replicate(
            (jnp.asarray(self.data.client_test_indices), jnp.asarray(self.data.num_test)), self.mesh
        )
        personal_eval = None
        if self.personal_eval is not None:
            personal_eval = (
                jax.jit(self.personal_eval)
                .lower(server_state, client_states, federation, *test, personal_key)
                .compile()
            )
        warmup = None
        if start.round == 0 and self.warmup_fn is not None:
            warmup_args = (server_state, client_states, federation, jnp.int32(0), warmup_key)
            warmup = jax.jit(self.warmup_fn).lower(*warmup_args).compile()
        compile_s = time.perf_counter() - t0
        if warmup is not None:
            t_warmup = time.perf_counter()
            server_state, client_states, m = warmup(*warmup_args)
            m = jax.device_get(m)
            train_s = time.perf_counter() - t_warmup
            self.account(counters, m, train_s, self.warmup_epochs(self.algorithm))

        global_acc, last = None, None
        for r in range(start.round, c.rounds):
            t_round = time.perf_counter()
            server_state, client_states, m = round_fn(
                server_state, client_states, federation, jnp.int32(r), key
            )
            m = jax.device_get(m)
            self.account(counters, m, time.perf_counter() - t_round)
            metrics = None
            if self.evaluates_after(r):
                personal = None
                if personal_eval is not None:
                    personal = self.personal_metrics(
                        *jax.device_get(
                            personal_eval(
                                server_state, client_states, federation, *test, personal_key
                            )
                        )
                    )
                metrics = self.round_metrics(
                    r, m, server_state, counters, elapsed(), (x_test, y_test, predict), personal
                )
                global_acc, last = metrics["global_acc"], metrics
            traffic_mb = (counters["up_bytes"] + counters["down_bytes"]) / 1e6
            state = RunState(
                r + 1,
                server_state,
                client_states,
                {**_as_arrays(counters), "elapsed_s": np.asarray(elapsed())},
            )
            yield Record(r + 1, metrics, global_acc, traffic_mb, state)
        self.finish(last, counters, compile_s, elapsed())

    def warmup_epochs(self, algorithm: FederatedAlgorithm) -> int:
        """Local epochs each client runs in ``algorithm``'s warm-up round."""
        return self.config.local_epochs * algorithm.warmup.epochs

    def account(self, counters: dict, m, train_s: float, epochs: int | None = None) -> None:
        """Adds round metrics ``m`` (host arrays) to the run's cumulative ``counters``; ``epochs``:
        local epochs each client ran (the config's when None)."""
        epochs = epochs or self.config.local_epochs
        counters["train_s"] += train_s
        counters["up_bytes"] += int(m.up_bytes.astype(np.int64).sum())
        counters["down_bytes"] += int(m.down_bytes.astype(np.int64).sum())
        counters["samples"] += int(m.num_examples.astype(np.int64).sum()) * epochs
        counters["clients_failed_total"] += int(m.failed.sum())
        counters["clients_dropped_total"] += int(m.dropped.sum())

    def evaluates_after(self, r: int) -> bool:
        """Whether round ``r`` (0-based) ends with an evaluation."""
        return (r + 1) % self.config.eval_every == 0 or r + 1 == self.config.rounds

    def round_metrics(self, r, m, server_state, counters, wall_s, test, personal) -> dict:
        """The contract's metrics.jsonl row after round ``r``; ``test`` is ``(x_test, y_test,
        predict)``, ``personal`` the ``personal_metrics`` of the round (None: the server model)."""
        x_test, y_test, predict = test
        report = self.algorithm.report
        acc = self.evaluate(server_state.model, x_test, y_test, predict)
        acc.update(personal or {})
        personal_acc = acc["personal_acc"]
        ok = m.participated & ~m.failed
        self.personal_acc = personal_acc
        return {
            "round": r + 1,
            "wall_s": wall_s,
            "loss": float(m.loss[ok].mean()) if ok.any() else None,
            "global_acc": acc["global_acc"],
            "personal_acc_mean": float(personal_acc.mean()),
            "personal_acc_worst10": evaluate.worst_fraction_mean(personal_acc),
            "up_mb": counters["up_bytes"] / 1e6,
            "down_mb": counters["down_bytes"] / 1e6,
            "model_mb": acc["model_mb"],
            "model_mb_values": acc["model_mb_values"],
            "density": acc["density"],
            "params": acc["params"],
            "clients_failed": int(m.failed.sum()),
            "clients_dropped": int(m.dropped.sum()),
            "clients_failed_total": counters["clients_failed_total"],
            "clients_participated": int(m.participated.sum()),
            **self.privacy_metrics(r + 1),
            **(report(server_state, acc.get("scores")) if report else {}),
            **self.evaluate_submodels(server_state, x_test, y_test, predict),
        }

    def finish(self, last: dict, counters: dict, compile_s: float, wall_s: float) -> None:
        """Sets ``self.summary``: the last evaluation plus the run's totals."""
        self.summary = {
            **last,
            "compile_s": compile_s,
            "wall_s": wall_s,
            "rounds": self.config.rounds,
            "samples_per_s": counters["samples"] / counters["train_s"]
            if counters["train_s"] > 0
            else None,
            "epsilon": last.get("epsilon"),
            "dp_noise_multiplier": self.privacy.settings.noise_multiplier if self.privacy else None,
            "poisoned_clients": [int(i) for i in self.poisoned_clients],
        }


def _zero_counters() -> dict:
    ints = ("up_bytes", "down_bytes", "samples", "clients_failed_total", "clients_dropped_total")
    counters = {k: np.asarray(0, np.int64) for k in ints}
    counters.update(train_s=np.asarray(0.0), elapsed_s=np.asarray(0.0))
    return counters


def _as_arrays(counters: dict) -> dict:
    zero = _zero_counters()
    return {k: np.asarray(v, zero[k].dtype) for k, v in counters.items()}
