"""Same config and seed give the same metrics on the same machine; another seed does not."""

from fedsim.config import load_config
from fedsim.engine import loop, setup


def metrics(seed):
    config = load_config("configs/fedavg.py:smoke,dataset=digits,algorithm=fedprox")
    config.unlock()
    config.update(seed=seed, rounds=3, dropout_prob=0.3, straggler_fraction=0.5)
    rows = [r.metrics for r in loop.run(setup.build_experiment(config)) if r.metrics]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_same_seed_same_metrics_other_seed_differs(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    first, second, other = metrics(0), metrics(0), metrics(1)
    assert first == second
    assert first != other
