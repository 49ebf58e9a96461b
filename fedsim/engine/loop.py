"""An experiment built from a config, and its rounds as a generator of records (no file I/O here).

``Experiment(config)`` validates the config, builds the federation, model, algorithm and the jitted
round, and ``experiment.records()`` runs the rounds, yielding one ``Record`` per round with the
contract's metrics on evaluation rounds. The CLI driver and notebooks consume the same generator.
"""

import time
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim import algorithms, models
from fedsim import config as config_lib
from fedsim.compress.encode import dense_bytes
from fedsim.data import datasets, partition
from fedsim.data.federated import make_federation
from fedsim.engine.round import Federation, build_round_fn, resolve_chunk_size
from fedsim.errors import ConfigError
from fedsim.metrics import evaluate

REGISTRIES = {
    "algorithm": algorithms.ALGORITHMS,
    "model": models.MODELS,
    "dataset": datasets.DATASETS,
    "partition": tuple(partition.PARTITIONERS),
}


class Record(NamedTuple):
    """One finished round: ``metrics`` holds the contract fields on evaluation rounds, else None."""

    round: int
    metrics: dict | None
    global_acc: float | None  # latest evaluated accuracy, for progress display
    traffic_mb: float  # cumulative up + down


class Experiment:
    """Everything one run needs, built from a config (see ``fedsim.config``)."""

    def __init__(self, config):
        config_lib.validate(config, registries=REGISTRIES)
        self.config = config
        dataset = datasets.load_dataset(config.dataset, seed=config.seed)
        if config.num_clients > len(dataset.y_train):
            raise ConfigError(
                f"num_clients={config.num_clients} exceeds the {len(dataset.y_train)} training "
                f"examples of dataset {config.dataset!r}"
            )
        self.data = make_federation(
            dataset,
            config.partition,
            config.num_clients,
            config.seed,
            alpha=config.alpha,
            min_size=config.min_client_size,
        )
        try:
            self.model = models.get_model(config.model, dataset.num_classes, **config.model_kwargs)
        except TypeError as err:
            raise ConfigError(
                f"model_kwargs={dict(config.model_kwargs)} for model={config.model!r}: {err}"
            ) from None
        self.algorithm = algorithms.get_algorithm(config, self.model, config.num_clients)
        self.clients_per_round = config_lib.clients_per_round(config)
        self.chunk_size = resolve_chunk_size(
            config.chunk_size, self.clients_per_round, jax.default_backend()
        )
        self.round_fn = build_round_fn(
            self.algorithm,
            num_clients=config.num_clients,
            clients_per_round=self.clients_per_round,
            chunk_size=self.chunk_size,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
        )
        self.predict_correct = evaluate.build_predict_correct(self.model, config.eval_batch_size)

    def init(self):
        """``(server_state, client_states)`` from the seed; client state stacked ``[C, ...]``."""
        init_key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0)
        model_vars = self.model.init(init_key, jnp.asarray(self.data.x_train[:1]))
        server_state = self.algorithm.server_init(model_vars)
        one = self.algorithm.client_init(model_vars)
        client_states = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (self.config.num_clients,) + leaf.shape), one
        )
        return server_state, client_states

    def federation(self) -> Federation:
        d = self.data
        return Federation(
            jnp.asarray(d.x_train),
            jnp.asarray(d.y_train),
            jnp.asarray(d.client_indices),
            jnp.asarray(d.num_examples),
        )

    def evaluate(self, model_vars, x_test, y_test, predict_correct=None) -> dict:
        """Global and personal accuracy of a model every client deploys."""
        predict_correct = predict_correct or self.predict_correct
        correct = np.asarray(predict_correct(model_vars, x_test, y_test))
        personal = evaluate.per_client_accuracy(
            correct, self.data.client_test_indices, self.data.num_test
        )
        return {
            "global_acc": float(correct.mean()),
            "personal_acc_mean": float(personal.mean()),
            "personal_acc_worst10": evaluate.worst_fraction_mean(personal),
            "personal_acc": personal,
        }

    def records(self) -> Iterator[Record]:
        """Runs every round; yields a Record per round. ``self.summary`` is set at the end."""
        c = self.config
        start = time.perf_counter()
        server_state, client_states = self.init()
        federation = self.federation()
        x_test, y_test = jnp.asarray(self.data.x_test), jnp.asarray(self.data.y_test)
        key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 1)
        donate = (0, 1) if jax.default_backend() != "cpu" else ()
        round_fn = (
            jax.jit(self.round_fn, donate_argnums=donate)
            .lower(server_state, client_states, federation, jnp.int32(0), key)
            .compile()
        )
        predict = jax.jit(self.predict_correct).lower(server_state.model, x_test, y_test).compile()
        compile_s = time.perf_counter() - start

        up = down = samples = failed_total = 0
        train_s = 0.0
        global_acc, last = None, None
        for r in range(c.rounds):
            t0 = time.perf_counter()
            server_state, client_states, m = round_fn(
                server_state, client_states, federation, jnp.int32(r), key
            )
            m = jax.device_get(m)
            train_s += time.perf_counter() - t0
            up += int(m.up_bytes.astype(np.int64).sum())
            down += int(m.down_bytes.astype(np.int64).sum())
            samples += int(m.num_examples.astype(np.int64).sum()) * c.local_epochs
            failed = int(m.failed.sum())
            failed_total += failed
            metrics = None
            if (r + 1) % c.eval_every == 0 or r + 1 == c.rounds:
                acc = self.evaluate(server_state.model, x_test, y_test, predict)
                global_acc = acc["global_acc"]
                ok = ~m.failed
                metrics = {
                    "round": r + 1,
                    "wall_s": time.perf_counter() - start,
                    "loss": float(m.loss[ok].mean()) if ok.any() else None,
                    "global_acc": acc["global_acc"],
                    "personal_acc_mean": acc["personal_acc_mean"],
                    "personal_acc_worst10": acc["personal_acc_worst10"],
                    "up_mb": up / 1e6,
                    "down_mb": down / 1e6,
                    "model_mb": dense_bytes(server_state.model) / 1e6,
                    "density": 1.0,
                    "params": models.count_params(server_state.model.params),
                    "clients_failed": failed,
                    "clients_failed_total": failed_total,
                }
                last = metrics
            yield Record(r + 1, metrics, global_acc, (up + down) / 1e6)
        self.final_state = (server_state, client_states)
        self.summary = {
            **last,
            "compile_s": compile_s,
            "wall_s": time.perf_counter() - start,
            "rounds": c.rounds,
            "samples_per_s": samples / train_s if train_s > 0 else None,
            "epsilon": None,
        }
