"""Host-side reporting: a run's cumulative counters, its metrics.jsonl rows and its summary.

Every function takes host values (numpy arrays, floats) and returns plain dicts, so a single run and
every cell of a grid report the same way. The fields are listed in ``docs/metrics.md``.
"""

import numpy as np

from fedsim.algorithms.base import FederatedAlgorithm, PersonalScores
from fedsim.compress import lowrank
from fedsim.metrics import evaluate

INT_COUNTERS = (
    "up_bytes",
    "down_bytes",
    "samples",
    "clients_failed_total",
    "clients_dropped_total",
)


def zero_counters(num_clients: int) -> dict:
    """A run's cumulative counters at the start, as numpy arrays (what a checkpoint stores): 0-d
    totals, and ``sampled``, which of the ``num_clients`` clients have taken part."""
    counters = {k: np.asarray(0, np.int64) for k in INT_COUNTERS}
    counters.update(train_s=np.asarray(0.0), elapsed_s=np.asarray(0.0), sim_time=np.asarray(0.0))
    counters["sampled"] = np.zeros(num_clients, bool)
    return counters


def on_host(counters: dict) -> dict:
    """Counters to update on the host: Python numbers, and a copy of ``sampled``."""
    return {k: np.array(v) if np.ndim(v) else np.asarray(v).item() for k, v in counters.items()}


def as_arrays(counters: dict) -> dict:
    """Host counters as the arrays of ``zero_counters`` (copies, safe to keep)."""
    totals = lambda k: np.int64 if k in INT_COUNTERS else np.float64
    return {k: np.array(v) if np.ndim(v) else np.asarray(v, totals(k)) for k, v in counters.items()}


def account(counters: dict, m, train_s: float, epochs: int) -> None:
    """Adds round metrics ``m`` (host ``RoundMetrics``) to ``counters``; ``epochs``: local epochs each
    client ran."""
    counters["train_s"] += train_s
    counters["sim_time"] += float(m.sim_time)
    counters["up_bytes"] += int(m.up_bytes.astype(np.int64).sum())
    counters["down_bytes"] += int(m.down_bytes.astype(np.int64).sum())
    counters["samples"] += int(m.num_examples.astype(np.int64).sum()) * epochs
    counters["clients_failed_total"] += int(m.failed.sum())
    counters["clients_dropped_total"] += int(m.dropped.sum())
    counters["sampled"][np.asarray(m.client_ids)[np.asarray(m.participated)]] = True


def server_model_scores(correct: np.ndarray, data, model_vars) -> dict:
    """Global and per-client accuracy of the server model (``correct``: per pooled test example),
    and its deployed size."""
    params, size = (int(n) for n in lowrank.deployed_size(model_vars))
    return {
        "global_acc": float(correct.mean()),
        "personal_acc": evaluate.per_client_accuracy(
            correct, data.client_test_indices, data.num_test
        ),
        "model_mb": size / 1e6,
        "model_mb_values": size / 1e6,
        "density": params / lowrank.dense_params(model_vars.params),
        "params": params,
    }


def personal_model_scores(hits, model_bytes, values_bytes, density, num_test) -> PersonalScores:
    """Each client's own deployed model on its own test split (host arrays of the personal eval)."""
    return PersonalScores(hits / np.maximum(num_test, 1), model_bytes, values_bytes, density)


def personal_overrides(scores: PersonalScores) -> dict:
    """The row fields a personal evaluation replaces: accuracy per client and mean storage."""
    return {
        "personal_acc": scores.accuracy,
        "model_mb": float(scores.model_bytes.astype(np.float64).mean()) / 1e6,
        "model_mb_values": float(scores.values_bytes.astype(np.float64).mean()) / 1e6,
        "density": float(scores.density.mean()),
    }


def last_position_metrics(correct: np.ndarray) -> dict:
    """``last_acc``: a sequence model's accuracy at the last position of every test window (the one
    prediction a window-level model makes); nothing when ``correct`` has one entry per window."""
    return {"last_acc": float(correct[:, -1].mean())} if correct.ndim > 1 else {}


def submodel_metrics(algorithm: FederatedAlgorithm, server_state, x_test, y_test, predict) -> dict:
    """``acc_<name>``, ``params_<name>``, ``model_mb_<name>``, ``round_mb_<name>`` (per client of
    that kind, down + up) and ``macs_<name>`` of every sub-model the algorithm serves."""
    if algorithm.submodels is None:
        return {}
    out = {}
    for name, sub in algorithm.submodels(server_state, x_test[:1]).items():
        out[f"acc_{name}"] = float(np.asarray(predict(sub.model, x_test, y_test)).mean())
        out[f"params_{name}"] = int(sub.params)
        out[f"model_mb_{name}"] = int(sub.model_bytes) / 1e6
        out[f"round_mb_{name}"] = int(sub.round_bytes) / 1e6
        out[f"macs_{name}"] = int(sub.macs)
    return out


def train_loss(m) -> float | None:
    """The round's mean training loss over the clients that took part and succeeded."""
    ok = m.participated & ~m.failed
    return float(m.loss[ok].mean()) if ok.any() else None


def round_row(round_number: int, m, scores: dict, counters: dict, wall_s: float) -> dict:
    """The contract's metrics.jsonl row after ``round_number`` rounds; ``scores`` holds the
    evaluated accuracies and sizes (``server_model_scores``, personal overrides applied)."""
    personal_acc = scores["personal_acc"]
    return {
        "round": round_number,
        "wall_s": wall_s,
        "sim_time": counters["sim_time"],
        "loss": train_loss(m),
        "global_acc": scores["global_acc"],
        "personal_acc_mean": float(personal_acc.mean()),
        "personal_acc_worst10": evaluate.worst_fraction_mean(personal_acc),
        "personal_acc_var": float(personal_acc.var()),
        "up_mb": counters["up_bytes"] / 1e6,
        "down_mb": counters["down_bytes"] / 1e6,
        "model_mb": scores["model_mb"],
        "model_mb_values": scores["model_mb_values"],
        "density": scores["density"],
        "params": scores["params"],
        "clients_failed": int(m.failed.sum()),
        "clients_dropped": int(m.dropped.sum()),
        "clients_failed_total": counters["clients_failed_total"],
        "clients_participated": int(m.participated.sum()),
        "clients_never_sampled": int((~counters["sampled"]).sum()),
    }


def summary(
    last: dict, counters: dict, *, compile_s, wall_s, rounds, noise, poisoned, attackers
) -> dict:
    """The last evaluation plus the run's totals (``summary.json`` before the driver's fields)."""
    train_s = counters["train_s"]
    return {
        **last,
        "compile_s": compile_s,
        "wall_s": wall_s,
        "rounds": rounds,
        "samples_per_s": counters["samples"] / train_s if train_s > 0 else None,
        "epsilon": last.get("epsilon"),
        "dp_noise_multiplier": noise,
        "poisoned_clients": [int(i) for i in poisoned],
        "attackers": [int(i) for i in attackers],
    }


def divergence(losses: list, num_classes: int) -> str | None:
    """Why a run with these evaluated training losses (``None``: no client succeeded) is diverging,
    or None: a missing or non-finite loss, or one above 3x chance level ``ln(num_classes)``."""
    ceiling = 3 * np.log(num_classes)
    for loss in losses:
        if loss is None or not np.isfinite(loss):
            return "every client's update was non-finite or missing"
        if loss > ceiling:
            return f"training loss {loss:.3g} is above 3x chance level ({ceiling:.3g})"
    return None
