"""pFedMe: T. Dinh, Tran, Nguyen, 'Personalized Federated Learning with Moreau Envelopes', NeurIPS 2020
(Algorithm 1; official code in CharlieDinh/pFedMe).

Client i minimises the Moreau envelope of its loss, ``F_i(w) = min_theta f_i(theta) + lam/2
||theta - w||^2``. A sampled client starts its local copy ``w`` from the server model and, at every
local step on a batch, approximates the envelope's minimiser ``theta`` by ``inner_steps`` (the paper's
K) plain gradient steps of size ``personal_lr`` on ``h(theta) = f_i(theta; batch) + lam/2 ||theta -
w||^2``, then steps ``w`` along the envelope's gradient ``lam (w - theta)``:

    theta <- theta - personal_lr (grad f_i(theta; batch) + lam (theta - w))    (K times)
    w     <- w - client_lr lam (w - theta)

with the client optimiser on ``w`` (with SGD exactly this rule). ``theta`` starts each round at the
received model and carries over from step to step, as in the official code. The server mixes:
``w <- (1 - beta) w + beta mean_i w_i``, i.e. FedAvg's ``n_i``-weighted mean (the official code's
weights) through ``optax.sgd(beta)``; ``beta = 1`` is the plain average. The message is FedAvg's
``Update``, so DP clips and noises ``w_i - w``. BatchNorm statistics come from ``theta``'s forward
passes; the server averages them as FedAvg. Each client keeps its last ``theta`` and deploys it, its
statistics re-measured (``reestimate_bn``); a client never sampled deploys the server model. The
reported loss is the mean over steps of ``h(theta)`` at the final ``theta``, the envelope's estimate.
"""

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import norm_stats
from fedsim.algorithms.base import FederatedAlgorithm
from fedsim.algorithms.ditto import Personal, deploy_personal, untrained
from fedsim.algorithms.fedavg import client_message, fedavg
from fedsim.algorithms.local import local_train, masked_cross_entropy
from fedsim.algorithms.spec import AlgorithmSpec, check_ranges
from fedsim.models.base import Model, ModelVars


def squared_distance(a, b):
    """``||a - b||^2`` over every leaf."""
    return sum(jnp.sum((x - y) ** 2) for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True))


def pfedme(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    lam=15.0,
    inner_steps: int = 5,
    personal_lr=0.01,
    beta=1.0,
    reestimate_bn: bool = True,
    name: str = "pfedme",
) -> FederatedAlgorithm:
    """pFedMe with envelope strength ``lam``, ``inner_steps`` steps of ``personal_lr`` per local step
    and server mixing ``beta`` (floats or traced arrays, except ``inner_steps``).

    >>> from fedsim.models import get_model
    >>> pfedme(get_model("mlp", 10), optax.sgd(0.01)).name
    'pfedme'
    """
    base = fedavg(model, client_optimizer, optax.sgd(beta), name=name)
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def personal_loss(theta, state, w, x, y, mask, key):
        """``h(theta) = f_i(theta; batch) + lam/2 ||theta - w||^2`` and the statistics after it."""
        logits, state = model.apply(ModelVars(theta, state), x, True, key, mask)
        return masked_cross_entropy(logits, y, mask) + lam / 2 * squared_distance(theta, w), state

    personal_grad = jax.grad(personal_loss, has_aux=True)

    def minimise(personal: ModelVars, w, x, y, mask, key) -> ModelVars:
        """``inner_steps`` gradient steps of ``personal_lr`` on ``h`` from ``personal``."""

        def step(personal: ModelVars, step_key):
            grads, state = personal_grad(*personal, w, x, y, mask, step_key)
            theta = jax.tree.map(lambda p, g: p - personal_lr * g, personal.params, grads)
            return ModelVars(theta, state), None

        keys = jax.random.split(key, inner_steps)
        return jax.lax.scan(step, personal, keys)[0]

    def envelope(w, personal: ModelVars, x, y, mask, key):
        """``h(theta)`` at the approximate minimiser ``theta`` of ``h``, held fixed, so that its
        gradient in ``w`` is the envelope's, ``lam (w - theta)``; the new ``theta`` as state."""
        personal = minimise(personal, jax.lax.stop_gradient(w), x, y, mask, key)
        theta = jax.lax.stop_gradient(personal.params)
        return personal_loss(theta, personal.state, w, x, y, mask, key)[0], personal

    def client_update(server_state, _last: Personal, task, dataset):
        """Local rounds from the server model (the last ``theta`` only serves deployment)."""
        received = server_state.model
        start = ModelVars(received.params, received)
        result = local_train(model, client_optimizer, start, task, dataset, loss_fn=envelope)
        w, personal = result.model
        sent = result._replace(model=ModelVars(w, personal.state))
        return client_message(sent, received, task, Personal(personal, jnp.bool_(True)))

    return base._replace(
        client_init=untrained, client_update=client_update, personalize=deploy_personal(refresh)
    )


SPEC = AlgorithmSpec(
    "pfedme",
    lambda hp, setup: pfedme(
        setup.model,
        setup.optimizer,
        hp["lam"],
        hp["inner_steps"],
        hp["personal_lr"],
        hp["beta"],
        setup.reestimate_bn,
    ),
    hparams={
        "lam": 15.0,  # envelope strength lambda tying theta to w (paper: 15; client_lr lam <= 1)
        "inner_steps": 5,  # gradient steps on each batch's personal problem (paper's K: 5)
        "personal_lr": 0.01,  # step size of those inner gradient steps on theta
        "beta": 1.0,  # server mixing: w <- (1 - beta) w + beta mean(w_i) (paper: 1 to 2)
    },
    traceable=("lam", "personal_lr", "beta"),
    check=lambda hp: check_ranges(
        hp, "pfedme", lam=">0", inner_steps=">0", personal_lr=">0", beta=">0"
    ),
)
