"""Byzantine-robust aggregation under attack (results/robust.md): FedAvg and five robust rules
(``fedsim/algorithms/robust.py``) against four simulated attacks (``fedsim/engine/faults.py``) by a
fixed 20 % of the clients, on Fashion-MNIST (offline) Dirichlet(0.5).

    fedsim sweep --config configs/robust.py --workdir runs/robust
    fedsim run --config configs/robust.py:algorithm=fedavg_median,attack=sign_flip --workdir runs/r
    python results/robust_table.py runs/robust

Setting: a seeded 10,000-image subset, 50 clients, 10 a round, 50 rounds, E=1, B=32, FedAvg's CNN at
half width (16/32 filters, 128 hidden: 0.2 M parameters), SGD lr 0.05 (momentum 0.5). Attack strengths: sign flip sends ``-4 delta``, scaling ``10 delta``
(Bhagoji et al. 2019's boosting), noise ``N(0, 1)`` per coordinate (Blanchard et al. 2017), label flip
trains on ``9 - y``. The rules are told the attackers' share where they need it: trimmed mean cuts
``beta = 0.2`` from each side, Krum and Multi-Krum tolerate ``f = 2`` of the 10 sampled clients
(Multi-Krum averages the ``m = 5`` best), norm bounding clips every update to ``NORM_BOUND``, the
median honest update norm of round 1 (measured, see ``NORM_BOUND``).
"""

from fedsim.config import apply_arg, base_config, parse_arg

ATTACKS = {
    "none": {},
    "sign_flip": {"attack_scale": 4.0},
    "scale": {"attack_scale": 10.0},
    "noise": {"attack_noise": 1.0},
    "label_flip": {},
}
# median L2 norm of one honest client's round-1 update (w_k - w), seeds 0-4: 0.69, 0.97, 0.94, 0.65,
# 0.80 (one client a round, the driver's model file minus the initial model)
NORM_BOUND = 0.8
DEFENCES = {
    "FedAvg": {"algorithm": "fedavg"},
    "median": {"algorithm": "fedavg_median"},
    "trimmed mean": {"algorithm": "fedavg_trimmed", "fedavg_trimmed.beta": 0.2},
    "Krum": {"algorithm": "fedavg_krum", "fedavg_krum.byzantine": 2, "fedavg_krum.multi": 1},
    "Multi-Krum": {"algorithm": "fedavg_krum", "fedavg_krum.byzantine": 2, "fedavg_krum.multi": 5},
    "norm bound": {"algorithm": "fedavg_normbound", "fedavg_normbound.max_norm": NORM_BOUND},
}
SEEDS = (0, 1, 2)
ATTACK_FRACTION = 0.2


def attack_keys(attack: str) -> dict:
    """The keys of ``attack`` at its strength, by ``ATTACK_FRACTION`` of the clients."""
    share = {"attack_fraction": ATTACK_FRACTION} if attack != "none" else {}
    return {"attack": attack, **ATTACKS[attack], **share}


def smoke(config):
    config.update(num_clients=10, clients_per_round=5, rounds=2, eval_every=1, train_examples=1000)


def get_config(arg=None):
    config = base_config()
    config.update(
        dataset="fashion_mnist", train_examples=10000, partition="dirichlet", alpha=0.5,
        num_clients=50, clients_per_round=10, rounds=50, local_epochs=1, batch_size=32,
        model="cnn", client_lr=0.05, client_momentum=0.5, eval_every=10,
    )  # fmt: skip
    config.model_kwargs = {"width": 16, "hidden": 128}
    values = parse_arg(arg)
    config.update(attack_keys(values.get("attack", "none")))
    return apply_arg(config, values, smoke).lock()


def get_sweep():
    """Attack x defence x seed, seed-major (each seed its own partition and attackers)."""
    return [
        {"seed": s, **attack_keys(attack), **defence}
        for s in SEEDS
        for attack in ATTACKS
        for defence in DEFENCES.values()
    ]
