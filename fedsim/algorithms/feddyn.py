"""FedDyn: Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, 'Federated Learning Based on Dynamic
Regularization', ICLR 2021, Algorithm 1 (official code: github.com/alpemreacar/FedDyn).

Client k keeps ``g_k``, its running ``grad L_k(theta_k)`` (zero at the start; stacked ``[C, ...]`` by
the engine). Given the server model ``theta``, it runs its local steps on
``L_k(theta') - <g_k, theta'> + alpha/2 ||theta' - theta||^2`` (the gradient
``grad L_k(theta') - g_k + alpha (theta' - theta)`` goes to the client optimiser), ends at
``theta_k``, and sets ``g_k <- g_k - alpha (theta_k - theta)``. The server keeps ``h`` (zero at the
start): ``h <- h - alpha/m sum_{k in P} (theta_k - theta)`` over the clients P that took part, ``m`` the
population, then ``theta <- mean_{k in P} theta_k - h / alpha``.

The message is an ``Update`` of weight 1 (Algorithm 1's plain mean over P) with delta
``theta_k - theta``, so DP clips and noises the change; BatchNorm statistics are averaged the same
way. The official code also scales ``alpha`` per client by ``n_mean / n_k``; here it is one number.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Update, mean_of
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import AlgorithmSpec, check_ranges
from fedsim.compress.encode import dense_bytes
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars
    h: optax.Params  # the paper's h: -alpha/m times the sum of every drift theta_k - theta so far


def feddyn(
    model: Model, client_optimizer: optax.GradientTransformation, num_clients: int, alpha=0.01
) -> FederatedAlgorithm:
    """FedDyn with regularisation strength ``alpha`` (a float or a traced array, > 0; the paper
    tries 0.1, 0.01 and 0.001) over a population of ``num_clients``.

    >>> from fedsim.models import get_model
    >>> feddyn(get_model("mlp", 10), optax.sgd(0.1), num_clients=100).name
    'feddyn'
    """
    zeros_like = lambda params: jax.tree.map(jnp.zeros_like, params)

    def server_init(model_vars):
        return ServerState(model_vars, zeros_like(model_vars.params))

    def client_update(server_state, grad_k, task, dataset):
        received = server_state.model

        def adjust(params, grads):
            return jax.tree.map(
                lambda g, gk, p, w: g - gk + alpha * (p - w), grads, grad_k, params, received.params
            )

        result = local_train(model, client_optimizer, received, task, dataset, adjust)
        delta = jax.tree.map(jnp.subtract, result.model.params, received.params)
        new_grad = jax.tree.map(lambda gk, d: gk - alpha * d, grad_k, delta)
        size = jnp.int32(dense_bytes(received))
        update = Update(delta, jnp.float32(1.0), state=result.model.state)
        return ClientResult(update, new_grad, result.loss, size, size)

    def server_update(server_state, total: Update):
        mean_delta, state = mean_of(total)
        h = jax.tree.map(lambda h, d: h - alpha / num_clients * d, server_state.h, total.delta)
        params = jax.tree.map(
            lambda w, d, h: w + d - h / alpha, server_state.model.params, mean_delta, h
        )
        return ServerState(ModelVars(params, state), h)

    return FederatedAlgorithm(
        "feddyn", server_init, lambda v: zeros_like(v.params), client_update, server_update
    )


SPEC = AlgorithmSpec(
    "feddyn",
    lambda hp, setup: feddyn(setup.model, setup.optimizer, setup.num_clients, hp["alpha"]),
    hparams={
        "alpha": 0.01,  # dynamic regularisation strength (the paper: 0.1, 0.01 or 0.001)
    },
    traceable=("alpha",),
    check=lambda hp: check_ranges(hp, "feddyn", alpha=">0"),
)
