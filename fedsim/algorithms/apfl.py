"""APFL: Deng, Kamani, Mahdavi, 'Adaptive Personalized Federated Learning', arXiv:2003.13461, 2020
(Algorithm 1; official code in MLOPT-PSU/FedTorch).

Each client k keeps a personal model ``v_k`` and a mixing weight ``alpha_k`` (client state, stacked
``[C, ...]``). A sampled client starts its copy ``w`` of the global model from the server's and, at
every local step on a batch ``xi``, with the mixed model ``vbar = alpha v + (1 - alpha) w``:

    w     <- w - eta grad f_k(w; xi)
    v     <- v - eta grad_v f_k(vbar; xi) = v - eta alpha grad f_k(vbar; xi)
    alpha <- clip(alpha - eta <v - w, grad f_k(vbar; xi)>, 0, 1)    (``adapt_alpha``; else fixed)

all at the step's starting point. ``w`` and ``v`` take the client optimiser (with SGD exactly these
rules), ``alpha`` a plain gradient step at the client learning rate, clipped to [0, 1] as the official
code does (without that code's extra ``0.02 alpha`` in the gradient). The server averages ``w`` as
FedAvg does (an ``Update`` weighted by ``n_k``, through the server optimiser), so traffic is FedAvg's.
Client k deploys ``alpha_k v_k + (1 - alpha_k) w`` with the server's current ``w`` (a client never
sampled: its initial ``alpha`` and ``v``, the initial model). BatchNorm statistics: ``w``'s go to the
server as in FedAvg; the mixed model keeps its own, from its forward passes, beside ``v_k``. The
reported loss is the mean of ``w``'s and ``vbar``'s training losses.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import FederatedAlgorithm, dense_personal
from fedsim.algorithms.fedavg import client_message, fedavg
from fedsim.algorithms.local import local_train, masked_cross_entropy
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.models.base import Model, ModelVars


class Joint(NamedTuple):
    """What a client's local steps train: the global copy, the personal model and the weight."""

    w: optax.Params
    v: optax.Params
    alpha: jax.Array  # float32 scalar


class ClientState(NamedTuple):
    personal: ModelVars  # v_k with the mixed model's statistics
    alpha: jax.Array  # float32 scalar alpha_k


def mix(alpha, v, w):
    """``alpha v + (1 - alpha) w``, leaf by leaf."""
    return jax.tree.map(lambda a, b: alpha * a + (1 - alpha) * b, v, w)


def within_unit_interval() -> optax.GradientTransformation:
    """Updates that keep their parameters in [0, 1] (the projection after the step)."""

    def update(updates, state, params):
        return jax.tree.map(lambda u, p: jnp.clip(p + u, 0, 1) - p, updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def apfl(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    lr,
    server_optimizer: optax.GradientTransformation | None = None,
    alpha: float = 0.25,
    adapt_alpha: bool = True,
    name: str = "apfl",
) -> FederatedAlgorithm:
    """FedAvg for ``w`` plus each client's mixed personal model (``lr``: the client learning rate,
    alpha's step size; ``alpha``: its initial value).

    >>> from fedsim.models import get_model
    >>> apfl(get_model("mlp", 10), optax.sgd(0.1), 0.1).name
    'apfl'
    """
    base = fedavg(model, client_optimizer, server_optimizer, name=name)
    alpha_step = optax.chain(optax.sgd(lr), within_unit_interval())
    optimizer = optax.multi_transform(
        {"model": client_optimizer, "alpha": alpha_step if adapt_alpha else optax.set_to_zero()},
        Joint("model", "model", "alpha"),
    )

    def loss_fn(joint: Joint, states, x, y, mask, key):
        """``f(w) + f(vbar)`` with ``w`` held fixed inside ``vbar``: its gradient is the three above."""
        w_state, mixed_state = states
        mixed = mix(joint.alpha, joint.v, jax.lax.stop_gradient(joint.w))
        w_logits, w_state = model.apply(ModelVars(joint.w, w_state), x, True, key, mask)
        mixed_logits, mixed_state = model.apply(ModelVars(mixed, mixed_state), x, True, key, mask)
        loss = masked_cross_entropy(w_logits, y, mask) + masked_cross_entropy(mixed_logits, y, mask)
        return loss, (w_state, mixed_state)

    def client_update(server_state, own: ClientState, task, dataset):
        received = server_state.model
        start = ModelVars(
            Joint(received.params, own.personal.params, own.alpha),
            (received.state, own.personal.state),
        )
        result = local_train(model, optimizer, start, task, dataset, loss_fn=loss_fn)
        joint, (w_state, mixed_state) = result.model
        own = ClientState(ModelVars(joint.v, mixed_state), joint.alpha)
        sent = result._replace(model=ModelVars(joint.w, w_state), loss=result.loss / 2)
        return client_message(sent, received, task, own)

    def personalize(server_state, own: ClientState, task, dataset):
        mixed = mix(own.alpha, own.personal.params, server_state.model.params)
        return dense_personal(ModelVars(mixed, own.personal.state))

    return base._replace(
        client_init=lambda model_vars: ClientState(model_vars, jnp.asarray(alpha, jnp.float32)),
        client_update=client_update,
        personalize=personalize,
    )


def _build(hparams: dict, setup) -> FederatedAlgorithm:
    server = server_optimizer(hparams)
    return apfl(
        setup.model, setup.optimizer, setup.lr, server, hparams["alpha"], hparams["adapt_alpha"]
    )


SPEC = AlgorithmSpec(
    "apfl",
    _build,
    hparams={
        "alpha": 0.25,  # initial mixing weight of each personal model (paper's alpha)
        "adapt_alpha": True,  # adapt each client's alpha by its gradient step (else it stays)
        **SERVER_SGD,
    },
    traceable=("alpha", "server_lr"),
    check=lambda hp: check_ranges(hp, "apfl", alpha="[0,1]", server_lr=">0"),
)
