"""FedPer: Arivazhagan, Aggarwal, Singh, Choudhary, 'Federated Learning with Personalization Layers',
arXiv:1912.00818, 2019.

The model splits into shared base layers ``b`` and a personal head ``h_k``: the last
``personal_layers`` top-level Dense modules of the parameter tree (``Dense_<i>``, ordered by ``i``).
Each sampled client k trains ``(b, h_k)`` jointly by local SGD for the round's local epochs, keeps
its new head and sends only its base: ``Update(n_k (b_k - b), n_k, state=n_k s_k)``. The server runs
FedAvg on the base, ``b <- b - server_opt(-sum_k n_k (b_k - b) / sum_k n_k)`` (plain averaging with
SGD at 1), and averages the model state (BatchNorm statistics) weighted by ``n_k``; only the base and
the statistics are downloaded and uploaded. Client k deploys ``(b, h_k)`` (a client never sampled, the
initial head). The server has no head of its own: its model keeps the initial head, so ``global_acc``
is the shared base under an untrained head; ``personal_acc_*`` are FedPer's accuracies.
"""

import re

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Update, dense_personal, mean_of
from fedsim.algorithms.fedavg import ServerState
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars

DENSE = re.compile(r"Dense_(\d+)")

HPARAMS = {
    "personal_layers": 1,  # the last N top-level Dense layers form each client's personal head
    **SERVER_SGD,
}


def head_layers(params, layers: int, name: str) -> tuple[str, ...]:
    """The last ``layers`` top-level ``Dense_<i>`` modules of ``params``, by ``i`` (not by string:
    ``Dense_10`` follows ``Dense_9``); ``name`` is the config section, for the one-line error."""
    dense = sorted((k for k in params if DENSE.fullmatch(k)), key=lambda k: int(k.split("_")[1]))
    if len(dense) < layers:
        raise ConfigError(
            f"{name}.personal_layers={layers}, but the model has {len(dense)} top-level Dense layers"
        )
    return tuple(dense[len(dense) - layers :])


def split_head(params, layers: int, name: str) -> tuple[dict, dict]:
    """``params`` -> ``(base, head)``, two dicts of its top-level modules; ``{**base, **head}``
    merges them back."""
    head = head_layers(params, layers, name)
    return {k: v for k, v in params.items() if k not in head}, {k: params[k] for k in head}


def fedper(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    personal_layers: int = 1,
    name: str = "fedper",
    train=None,
) -> FederatedAlgorithm:
    """FedAvg on the base with personal heads. ``train(start, task, dataset) -> LocalResult`` is the
    client's local training (default: ``local_train`` of base and head together; FedRep's
    alternates them).

    >>> from fedsim.models import get_model
    >>> fedper(get_model("mlp", 10), optax.sgd(0.1)).name
    'fedper'
    """
    server_optimizer = server_optimizer or optax.sgd(1.0)
    train = train or (
        lambda start, task, dataset: local_train(model, client_optimizer, start, task, dataset)
    )
    split = lambda params: split_head(params, personal_layers, name)

    def server_init(model_vars):
        return ServerState(model_vars, server_optimizer.init(split(model_vars.params)[0]))

    def client_update(server_state, head, task, dataset):
        received = server_state.model
        base = split(received.params)[0]
        result = train(ModelVars({**base, **head}, received.state), task, dataset)
        new_base, new_head = split(result.model.params)
        weight = task.num_examples.astype(jnp.float32)
        delta = jax.tree.map(lambda new, old: weight * (new - old), new_base, base)
        state = jax.tree.map(lambda s: weight * s, result.model.state)
        size = jnp.int32(dense_bytes((base, received.state)))
        return ClientResult(Update(delta, weight, state=state), new_head, result.loss, size, size)

    def server_update(server_state, total):
        delta, state = mean_of(total)
        base, head = split(server_state.model.params)
        pseudo_grad = jax.tree.map(jnp.negative, delta)
        updates, opt_state = server_optimizer.update(pseudo_grad, server_state.opt_state, base)
        params = {**optax.apply_updates(base, updates), **head}
        return ServerState(ModelVars(params, state), opt_state)

    def personalize(server_state, head, task, dataset):
        base = split(server_state.model.params)[0]
        return dense_personal(ModelVars({**base, **head}, server_state.model.state))

    return FederatedAlgorithm(
        name,
        server_init,
        lambda model_vars: split(model_vars.params)[1],
        client_update,
        server_update,
        personalize,
    )


def _build(hparams: dict, setup) -> FederatedAlgorithm:
    server = server_optimizer(hparams)
    return fedper(setup.model, setup.optimizer, server, hparams["personal_layers"])


SPEC = AlgorithmSpec(
    "fedper",
    _build,
    hparams=HPARAMS,
    traceable=("server_lr",),
    check=lambda hp: check_ranges(hp, "fedper", personal_layers=">0", server_lr=">0"),
)
