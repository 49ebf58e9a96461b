"""How many attackers each round of configs/robust.py samples, per seed (results/robust.md): the
rules assume at most ``f = 2`` (Krum) or ``beta K = 2`` (trimmed mean) of the 10 a round, but a
fixed 20 % of 50 clients, sampled 10 at a time, puts more than that into some rounds.

    python results/robust_attackers.py

Uses the engine's key schedule (``setup.run_keys``, ``round.round_keys``) and its sampler
(``round.sample_clients``), so it reproduces the runs' cohorts without training.
"""

from pathlib import Path

import numpy as np

from fedsim import config as config_lib
from fedsim.engine import setup
from fedsim.engine.round import round_keys, sample_clients

ROOT = Path(__file__).resolve().parents[1]
robust = config_lib.config_module(str(ROOT / "configs/robust.py"))


def attackers_per_round(seed: int) -> np.ndarray:
    """``[rounds]``: the attackers among each round's sampled clients for training seed ``seed``."""
    config = robust.get_config(f"attack=sign_flip,seed={seed}")
    malicious = setup.attackers(config)
    run_key = setup.run_keys(setup.build_experiment(config))[0]
    counts = []
    for r in range(config.rounds):
        _, sample_key, _ = round_keys(run_key, r)
        ids, _ = sample_clients(sample_key, config.num_clients, config.clients_per_round, "fixed")
        counts.append(np.isin(np.asarray(ids), malicious).sum())
    return np.array(counts)


if __name__ == "__main__":
    print(
        "| seed | attackers a round (mean) | max | rounds with >= 3 | with >= 5 | rounds with 6 or more |"
    )
    print("|---|---|---|---|---|---|")
    for seed in robust.SEEDS:
        c = attackers_per_round(seed)
        over = ", ".join(str(r + 1) for r in np.flatnonzero(c >= 6)) or "none"
        print(
            f"| {seed} | {c.mean():.2f} | {c.max()} | {(c >= 3).sum()} | {(c >= 5).sum()} | {over} |"
        )
