"""Performance suites behind ``fedsim bench --suite NAME``.

A timing is quoted as a ratio measured side by side in one process: every way of running a round is
compiled ahead of time, then all are timed in turn (A, B, C, A, B, C, ...) and each keeps its median
(which also drops a slow first call), so load on a shared machine affects all alike.

- ``round``: one FedAvg round of K clients, each 5 local SGD steps of batch 32 on the FedAvg CNN and
  on pfl-research's ``simple_cnn``, with synthetic CIFAR-shaped data resident on the device, run
  several ways: fedsim's compiled round (chunk size as the engine picks it), one centralised model
  doing the same SGD work at batch K * 32 (the compute limit for the same FLOPs), one model doing the same steps at the round's batch 32 (in one
  compiled scan, and as a jitted step called per step with XLA's native convolution; the fastest of
  the two is the target) and a Python loop calling a jitted ``local_train`` per client (how most
  simulators run).
- ``algorithms``: FedProx, SCAFFOLD, FedLTN and Maestro round time over FedAvg's, one shared setting.
- ``pfl``: pfl-research's CIFAR-10 benchmark setup (its ``simple_cnn``) run end to end by the run
  loop (setup, compile, rounds, evaluations), then fedsim's compiled round and pfl-research's round
  (``fedsim.peers``, in the interpreter ``--peer-python`` names) timed in turn on the same federation.

Every suite's experiment is ``suite_config(setting)``: the package's ``base_config`` with the FedAvg
CNN defaults of ``configs/fedavg.py`` and the suite's ``key=value`` setting, so no config file is read.
"""

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from fedsim.algorithms.base import ClientTask, Dataset
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train, masked_cross_entropy
from fedsim.algorithms.task import Federation
from fedsim.config import apply_arg, base_config
from fedsim.engine import loop, setup
from fedsim.engine.round import build_round_fn, resolve_chunk_size
from fedsim.errors import ConfigError
from fedsim.models import get_model
from fedsim.models.base import ModelVars
from fedsim.peers.process import PeerProcess, missing_peer

SUITES = ("round", "algorithms", "pfl")

LOCAL_STEPS, BATCH_SIZE = 5, 32
ROUND_MODELS = ("cnn", "simple_cnn")  # the FedAvg CNN and pfl-research's benchmark CNN
CIFAR_SHAPE, CIFAR_TRAIN = (32, 32, 3), 50_000  # more clients than CIFAR-10 holds share examples
CENTRAL_MAX_CLIENTS = {"cpu": 100}  # clients per centralised batch (memory); elsewhere 1,000
LOOP_MAX_CLIENTS = {"cpu": 100}  # the per-client loop is timed up to this K; elsewhere 1,000

ALGORITHMS = ("fedavg", "fedprox", "scaffold", "fedltn", "maestro")
ALGORITHMS_SETTING = (  # the round suite's K = 10, with the 10 % validation split FedLTN prunes on
    "model=cnn,dataset=synthetic_cifar,train_examples=16000,partition=iid,num_clients=100,"
    "clients_per_round=10,local_epochs=1,batch_size=32,val_fraction=0.1"
)
ALGORITHMS_QUICK = (  # Maestro without rank sampling and shrinking compiles ~3x faster
    "smoke,dataset=synthetic,partition=iid,val_fraction=0.1,maestro.ordered_dropout=False,"
    "maestro.shrink_every=0"
)

PFL_ROUNDS = 1500
PFL_REPEATS = 5
PFL_SETTING = (  # pfl-research's CIFAR-10 benchmark: 1,000 clients of 50 examples
    "model=simple_cnn,dataset=synthetic_cifar,partition=iid,num_clients=1000,clients_per_round=50,"
    "local_epochs=1,batch_size=10,eval_every=10,client_lr=0.1"
)
PFL_QUICK = "smoke,dataset=synthetic,partition=iid,num_clients=20,clients_per_round=5,batch_size=10"


def device_fields() -> dict:
    """The device as JAX names it, its platform, and the host's processor and core count."""
    device = jax.devices()[0]
    return {"device": device.device_kind, "platform": device.platform, "host": host_name()}


def host_name() -> str:
    """``"<processor model>, <n> cores"`` (the model from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    return f"{models[0] if models else platform.processor() or 'unknown'}, {os.cpu_count()} cores"


def peak_memory_bytes() -> int | None:
    """The device's peak bytes in use so far (None where the backend does not report it)."""
    stats = jax.devices()[0].memory_stats()
    return stats.get("peak_bytes_in_use") if stats else None


def interleaved_medians(timers: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each timer (a no-argument function returning its seconds), called in turn
    (A, B, A, B, ...) ``repeats`` times."""
    times = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: statistics.median(t) for name, t in times.items()}


def _timer(run: Callable[[], object]) -> Callable[[], float]:
    """``run`` as a timer: each call runs it, waits for its result and returns the seconds taken."""

    def seconds():
        t = time.perf_counter()
        jax.block_until_ready(run())
        return time.perf_counter() - t

    return seconds


def suite_config(setting: str) -> ConfigDict:
    """``base_config()`` with ``configs/fedavg.py``'s defaults (the FedAvg CNN on ``mnist_subset``,
    Dirichlet split, 50 rounds) and ``setting`` (``key=value,...``; ``smoke`` shrinks it first)."""
    config = base_config()
    config.update(model="cnn", dataset="mnist_subset", partition="dirichlet", rounds=50)
    return apply_arg(config, setting, _smoke).lock()


def _smoke(config: ConfigDict) -> None:
    config.update(num_clients=10, clients_per_round=3, rounds=2, local_epochs=1, eval_every=1)
    config.model = "mlp"
    config.model_kwargs = {"hidden": (16,)}


def compiled_round(experiment: setup.Experiment) -> Callable[[], float]:
    """A timer running the next round of ``experiment``, compiled ahead of time."""
    programs = setup.programs(experiment)
    server, clients = setup.init_states(experiment, programs.algorithm)
    federation, key = setup.federation(experiment), jax.random.PRNGKey(0)
    fn = jax.jit(programs.round_fn).lower(server, clients, federation, jnp.int32(0), key).compile()
    state = {"server": server, "clients": clients, "round": 0}

    def one_round():
        out = fn(state["server"], state["clients"], federation, jnp.int32(state["round"]), key)
        state.update(server=out[0], clients=out[1], round=state["round"] + 1)
        return out

    return _timer(one_round)


def _task(indices, key) -> ClientTask:
    """The schedule ``indices`` (``[steps, batch]``, every slot a real example) as one client's task."""
    no_validation = (jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool))
    return ClientTask(
        indices, jnp.ones(indices.shape, bool), jnp.int32(indices.size), key, jnp.int32(0),
        *no_validation, indices.reshape(-1),
    )  # fmt: skip


def _sgd_step(model, optimizer, start, rows, dataset):
    """``start`` after one optimiser step on the examples ``rows``: no loop around it, so XLA's
    convolutions stay on their fast path on CPU."""
    mask = jnp.ones(rows.shape, bool)

    def loss(params):
        logits, state = model.apply(
            ModelVars(params, start.state), dataset.x[rows], True, jax.random.PRNGKey(0), mask
        )
        return masked_cross_entropy(logits, dataset.y[rows], mask), state

    (_, state), grads = jax.value_and_grad(loss, has_aux=True)(start.params)
    updates, _ = optimizer.update(grads, optimizer.init(start.params), start.params)
    return ModelVars(optax.apply_updates(start.params, updates), state)


class _RoundSetting:
    """The round suite's model, optimiser, starting weights and device-resident example pool."""

    def __init__(self, model: str, max_clients: int, model_kwargs: dict):
        self.model_name, self.model_kwargs = model, model_kwargs
        self.model = get_model(model, 10, **model_kwargs)
        self.optimizer = optax.sgd(0.01)
        init_key, self.key = jax.random.split(jax.random.PRNGKey(0))
        pool = min(max_clients * LOCAL_STEPS * BATCH_SIZE, CIFAR_TRAIN)
        rng = np.random.default_rng(0)
        self.dataset = Dataset(
            jnp.asarray(rng.random((pool, *CIFAR_SHAPE), np.float32)),
            jnp.asarray(rng.integers(0, 10, pool, np.int32)),
        )
        init = jax.jit(self.model.init)  # one compile instead of one per eager op
        self.start = init(init_key, self.dataset.x[:1])
        self.platform = jax.default_backend()

    def client_indices(self, clients: int) -> jax.Array:
        """``[K, 160]``: client ``k`` holds pool examples ``160 k ...`` (wrapping around the pool)."""
        per_client = LOCAL_STEPS * BATCH_SIZE
        flat = jnp.arange(clients * per_client, dtype=jnp.int32) % self.dataset.x.shape[0]
        return flat.reshape(clients, per_client)

    def fedsim_round(self, clients: int) -> tuple[Callable[[], float], dict]:
        """fedsim's compiled FedAvg round of ``clients`` clients as a timer, and its compile time,
        chunk size and memory. Where the device reports memory the first round runs here, so that
        the peak read after it is this round's (nothing bigger has run yet)."""
        algorithm = fedavg(self.model, self.optimizer)
        chunk_size = resolve_chunk_size(0, clients, self.platform)
        round_fn = build_round_fn(
            algorithm, num_clients=clients, clients_per_round=clients, chunk_size=chunk_size,
            local_epochs=1, batch_size=BATCH_SIZE,
        )  # fmt: skip
        federation = Federation(
            *self.dataset,
            self.client_indices(clients),
            jnp.full((clients,), LOCAL_STEPS * BATCH_SIZE, jnp.int32),
        )
        server = algorithm.server_init(jax.tree.map(jnp.copy, self.start))
        donate = () if self.platform == "cpu" else (0,)  # as the run loop does
        t = time.perf_counter()
        compiled = (
            jax.jit(round_fn, donate_argnums=donate)
            .lower(server, (), federation, jnp.int32(0), self.key)
            .compile()
        )
        compile_s = time.perf_counter() - t
        state = {"server": server, "round": 0}

        def one_round():
            server, _, metrics = compiled(
                state["server"], (), federation, jnp.int32(state["round"]), self.key
            )
            state.update(server=server, round=state["round"] + 1)
            return server, metrics

        timer = _timer(one_round)
        if peak_memory_bytes() is not None:
            timer()
        return timer, {
            "chunk_size": chunk_size,
            "compile_s": compile_s,
            "peak_memory_bytes": peak_memory_bytes(),
            "round_temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
        }

    def _trained(self, start, indices, dataset):
        """The model after ``local_train`` from ``start`` over the schedule ``indices``."""
        task = _task(indices, self.key)
        return local_train(self.model, self.optimizer, start, task, dataset).model

    def central(self, clients: int) -> tuple[Callable[[], float], int, int]:
        """One model doing the round's SGD work at batch ``K * 32`` (capped for memory, with more
        steps then): a timer, its batch size and the samples one call processes."""
        group = min(clients, CENTRAL_MAX_CLIENTS.get(self.platform, 1000))
        batch = group * BATCH_SIZE
        steps = math.ceil(clients * LOCAL_STEPS / group)
        indices = (jnp.arange(steps * batch, dtype=jnp.int32) % self.dataset.x.shape[0]).reshape(
            steps, batch
        )
        train = jax.jit(self._trained).lower(self.start, indices, self.dataset).compile()
        return _timer(lambda: train(self.start, indices, self.dataset)), batch, steps * batch

    def central_same_batch(self, clients: int) -> dict[str, Callable[[], float]]:
        """One model doing the round's ``K * 5`` SGD steps at the round's batch of 32, two ways:
        ``scan``, the steps inside one compiled ``lax.scan`` (the model's own convolution, as
        the round runs it), and ``steps``, a jitted single step called from Python per step with
        XLA's native convolution (fast outside a loop body on CPU)."""
        steps = clients * LOCAL_STEPS
        pool = self.dataset.x.shape[0]
        indices = (jnp.arange(steps * BATCH_SIZE, dtype=jnp.int32) % pool).reshape(steps, -1)
        scan = jax.jit(self._trained).lower(self.start, indices, self.dataset).compile()
        native = get_model(self.model_name, 10, conv_impl="xla", **self.model_kwargs)
        step = (
            jax.jit(
                lambda start, rows: _sgd_step(native, self.optimizer, start, rows, self.dataset)
            )
            .lower(self.start, indices[0])
            .compile()
        )
        schedule = list(indices)

        def stepped():
            model = self.start
            for rows in schedule:
                model = step(model, rows)
            return model

        return {
            "central_scan": _timer(lambda: scan(self.start, indices, self.dataset)),
            "central_steps": _timer(stepped),
        }

    def loop(self, clients: int) -> Callable[[], float]:
        """A Python loop over the clients, each a jitted ``local_train`` call, summed, then the mean."""
        schedules = list(self.client_indices(clients).reshape(clients, LOCAL_STEPS, BATCH_SIZE))
        client_update = (
            jax.jit(self._trained).lower(self.start, schedules[0], self.dataset).compile()
        )
        zeros = jax.tree.map(jnp.zeros_like, self.start.params)
        add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b)).lower(zeros, zeros).compile()

        def round_mean():
            total = zeros
            for indices in schedules:
                total = add(total, client_update(self.start, indices, self.dataset).params)
            return jax.tree.map(lambda leaf: leaf / clients, total)

        return _timer(round_mean)


def round_suite(
    model: str, clients: tuple[int, ...], repeats: int, model_kwargs: dict
) -> list[dict]:
    """fedsim's round of ``model`` against the centralised runs and the per-client loop, one row
    per K.

    Every K's fedsim round is compiled first, in increasing K, so that a peak memory read after its
    first round is fedsim's own (no central or loop run has raised it yet).
    """
    setting = _RoundSetting(model, max(clients), model_kwargs)
    rounds = {k: setting.fedsim_round(k) for k in sorted(clients)}
    rows = []
    for k in clients:
        fedsim_timer, fedsim_fields = rounds[k]
        central_timer, central_batch, central_samples = setting.central(k)
        timers = {"fedsim": fedsim_timer, "central": central_timer}
        if k <= LOOP_MAX_CLIENTS.get(setting.platform, 1000):
            timers["loop"] = setting.loop(k)
            timers.update(setting.central_same_batch(k))
        seconds = interleaved_medians(timers, repeats)
        samples = k * LOCAL_STEPS * BATCH_SIZE
        fedsim_rate = samples / seconds["fedsim"]
        central_rate = central_samples / seconds["central"]
        same_batch = {
            f"{name}_samples_per_s": samples / seconds[name] if name in seconds else None
            for name in ("central_scan", "central_steps")
        }
        fastest = max(filter(None, same_batch.values()), default=None)
        loop_rate = samples / seconds["loop"] if "loop" in seconds else None
        rows.append({
            "suite": "round", **device_fields(), "model": model, "model_kwargs": model_kwargs,
            "clients_per_round": k, "local_steps": LOCAL_STEPS, "batch_size": BATCH_SIZE,
            "dtype": "float32", "rounds_timed": repeats, "central_batch_size": central_batch,
            "fedsim_round_s": seconds["fedsim"], "fedsim_samples_per_s": fedsim_rate,
            "central_samples_per_s": central_rate, "loop_samples_per_s": loop_rate,
            "ratio_vs_central": fedsim_rate / central_rate, **same_batch,
            "ratio_vs_fastest_central_same_batch": fedsim_rate / fastest if fastest else None,
            "ratio_vs_loop": fedsim_rate / loop_rate if loop_rate else None,
            **fedsim_fields,
        })  # fmt: skip
    return rows


def algorithms_suite(setting: str, repeats: int) -> list[dict]:
    """Round time of each of ``ALGORITHMS`` over FedAvg's in ``suite_config(setting)`` (Maestro on
    the factorised twin of the same model)."""
    settings = {a: f"{setting},algorithm={a}" for a in ALGORITHMS}
    settings["maestro"] += ",model_kwargs={'factorized':True}"
    configs = {a: suite_config(s) for a, s in settings.items()}
    rounds = {a: compiled_round(setup.build_experiment(c)) for a, c in configs.items()}
    seconds = interleaved_medians(rounds, repeats)
    config = configs["fedavg"]
    rows = []
    for a in ALGORITHMS:
        rows.append({
            "suite": "algorithms", **device_fields(), "model": config.model,
            "dataset": config.dataset, "setting": setting, "algorithm": a,
            "clients_per_round": config.clients_per_round, "local_epochs": config.local_epochs,
            "batch_size": config.batch_size, "dtype": "float32", "rounds_timed": repeats,
            "round_s": seconds[a], "fedavg_round_s": seconds["fedavg"],
            "ratio_vs_fedavg": seconds[a] / seconds["fedavg"],
        })  # fmt: skip
    return rows


def pfl_suite(setting: str, rounds: int, peer_python: str, repeats: int) -> list[dict]:
    """``rounds`` rounds of ``suite_config(setting)`` end to end (setup, compile, rounds,
    evaluations), the wall clock extrapolated to the benchmark's 1,500 rounds, and the round timed
    against pfl-research's (``side_by_side``)."""
    t = time.perf_counter()
    experiment = setup.build_experiment(suite_config(f"{setting},rounds={rounds}"))
    setup_s = time.perf_counter() - t
    evaluations = 0
    for record in loop.run(experiment):
        evaluations += record.metrics is not None
    config, summary = experiment.config, record.summaries[0]
    train_s = float(record.state(0).counters["train_s"])
    eval_s = summary["wall_s"] - summary["compile_s"] - train_s  # and per-round bookkeeping
    full_evaluations = math.ceil(PFL_ROUNDS / config.eval_every)
    full_s = (
        setup_s
        + summary["compile_s"]
        + train_s * PFL_ROUNDS / rounds
        + eval_s * full_evaluations / evaluations
    )
    row = {
        "suite": "pfl", **device_fields(), "model": config.model, "dataset": config.dataset,
        "num_clients": config.num_clients, "clients_per_round": config.clients_per_round,
        "examples_per_client": int(experiment.data.num_examples.max()),
        "local_epochs": config.local_epochs, "batch_size": config.batch_size,
        "eval_every": config.eval_every, "dtype": "float32", "rounds_run": rounds,
        "rounds_full": PFL_ROUNDS, "evaluations": evaluations, "setup_s": setup_s,
        "compile_s": summary["compile_s"], "train_s": train_s, "eval_s": eval_s,
        "round_s": train_s / rounds, "samples_per_s": summary["samples_per_s"],
        "wall_s": setup_s + summary["wall_s"], "wall_s_full_extrapolated": full_s,
        "global_acc": summary["global_acc"],
    }  # fmt: skip
    return [{**row, **side_by_side(experiment, peer_python, repeats)}]


def side_by_side(experiment: setup.Experiment, peer_python: str, repeats: int) -> dict:
    """fedsim's compiled round and pfl-research's round (``fedsim.peers``: its ``simple_cnn``, local
    SGD, server SGD, no evaluation) on the same federation, timed in turn ``repeats`` times; the
    pfl fields are None, with a note saying why, when ``peer_python`` lacks pfl or torch."""
    fields = ("pfl_research_round_s", "pfl_research_samples_per_s", "pfl_research_wall_s")
    if experiment.config.model != "simple_cnn":
        missing = f"its worker trains simple_cnn, not {experiment.config.model!r}"
    else:
        missing = missing_peer(peer_python)
    if missing:
        return {**dict.fromkeys(fields), "ratio_vs_pfl": None, "peer": None,
                "note": f"pfl-research was not measured: {missing}"}  # fmt: skip
    config, data = experiment.config, experiment.data
    settings = {
        "clients_per_round": config.clients_per_round, "local_epochs": config.local_epochs,
        "batch_size": config.batch_size, "client_lr": config.client_lr,
        "server_lr": config.fedavg.server_lr, "seed": config.seed,
    }  # fmt: skip
    with PeerProcess(peer_python, data, settings) as peer:
        seconds = interleaved_medians({"fedsim": compiled_round(experiment), "pfl": peer.timer(1)},
                                      repeats)  # fmt: skip
        info = peer.info
    samples = config.clients_per_round * config.local_epochs * float(data.num_examples.mean())
    pfl_wall = info["setup_s"] + info["warmup_round_s"] + seconds["pfl"] * (PFL_ROUNDS - 1)
    return {
        "rounds_timed": repeats, "fedsim_round_s": seconds["fedsim"],
        "fedsim_samples_per_s": samples / seconds["fedsim"],
        "pfl_research_round_s": seconds["pfl"], "pfl_research_samples_per_s": samples / seconds["pfl"],
        "pfl_research_wall_s": pfl_wall, "ratio_vs_pfl": seconds["pfl"] / seconds["fedsim"],
        "peer": info,
        "note": "pfl_research_wall_s: pfl's setup, one warm-up round and 1,499 timed-median rounds, "
        "without evaluation; ratio_vs_pfl: pfl's round seconds over fedsim's, timed in turn",
    }  # fmt: skip


def run_suite(
    suite: str,
    *,
    clients: list[int] | None = None,
    rounds: int | None = None,
    quick: bool = False,
    peer_python: str = sys.executable,
) -> list[dict]:
    """The rows of ``suite``. ``clients``: the round suite's K values; ``rounds``: rounds run (pfl)
    or timed per way of running (round, algorithms); ``quick``: a tiny setting, for tests;
    ``peer_python``: the interpreter with pfl-research installed (pfl)."""
    if suite not in SUITES:
        raise ConfigError(f"--suite {suite!r} is unknown; accepted: {', '.join(SUITES)}")
    if clients is not None and suite != "round":
        raise ConfigError(f"--clients applies to --suite round only, not to --suite {suite!r}")
    for value in [*(clients or ()), *([] if rounds is None else [rounds])]:
        if value < 1:
            raise ConfigError(f"--clients/--rounds value {value} must be a positive integer")
    if suite == "round":
        cpu = jax.default_backend() == "cpu"
        default_clients = (2,) if quick else (10, 100) if cpu else (10, 100, 1000, 10000)
        models = {"cnn": {"width": 4, "hidden": 16}} if quick else dict.fromkeys(ROUND_MODELS, {})
        repeats = rounds or (1 if quick else 5)
        return [
            row
            for model, kwargs in models.items()
            for row in round_suite(model, tuple(clients or default_clients), repeats, kwargs)
        ]
    if suite == "algorithms":
        setting = ALGORITHMS_QUICK if quick else ALGORITHMS_SETTING
        return algorithms_suite(setting, rounds or (1 if quick else 10))
    setting, repeats = (PFL_QUICK, 1) if quick else (PFL_SETTING, PFL_REPEATS)
    return pfl_suite(setting, rounds or (2 if quick else PFL_ROUNDS), peer_python, repeats)


def default_out(suite: str) -> Path:
    """``runs/bench/<suite>_<platform>.json`` (committed results are written with ``--out``)."""
    return Path("runs/bench") / f"{suite}_{jax.default_backend()}.json"


def write_json(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
