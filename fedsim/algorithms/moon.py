"""MOON: Li, He, Song, 'Model-Contrastive Federated Learning', CVPR 2021 (official code:
github.com/QinbinLi/MOON).

FedAvg whose clients add a model-contrastive term to the cross-entropy. With ``z`` the local model's
representation of an example, ``z_glob`` the received global model's and ``z_prev`` the client's
previous local model's (both in inference mode, as the official code's ``eval()`` copies),
``l_con = -log(e^{sim(z, z_glob)/tau} / (e^{sim(z, z_glob)/tau} + e^{sim(z, z_prev)/tau}))`` with
``sim`` the cosine similarity, and the local loss is ``CE + mu l_con`` (each a mean over the batch's
real examples; the reported training loss is this sum). The previous model (client state, stacked
``[C, ...]`` by the engine) is the model the client trained at its last participation; until then it is
the received global model, so ``l_con = log 2`` with zero gradient, as with the official code's empty
model pool in round 1.

The representation is what the model sows under ``fedsim.models.base.REPRESENTATION``: the
classifier's input for ``mlp``, ``cnn``, ``bn_cnn``, ``lenet5``, ``resnet18`` and ``vgg11``. The paper
puts a two-layer projection head on top of the encoder and contrasts its output; these models have
none, so ``z`` is the penultimate layer. Defaults: ``mu = 1`` (the official code's default and the
paper's choice on CIFAR-100 and Tiny-ImageNet; the paper uses ``mu = 5`` on CIFAR-10), ``tau = 0.5``.
The server is FedAvg's (an ``n_k``-weighted ``Update``, so DP wraps it) with its server optimiser keys.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Update
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


class Previous(NamedTuple):
    """A client's MOON state: its last trained model, and whether it has trained yet."""

    model: ModelVars
    trained: jax.Array  # bool scalar


def cosine(a, b):
    """Row-wise cosine similarity of two ``[B, d]`` arrays (norms floored at 1e-8)."""
    norm = lambda v: jnp.sqrt(jnp.maximum(jnp.sum(v * v, -1), 1e-16))
    return jnp.sum(a * b, -1) / (norm(a) * norm(b))


def contrastive_loss(z, z_glob, z_prev, tau):
    """MOON's ``l_con`` per example: the cross-entropy of the positive pair ``(z, z_glob)`` against
    the negative ``(z, z_prev)`` at temperature ``tau``."""
    logits = jnp.stack([cosine(z, z_glob), cosine(z, z_prev)], -1) / tau
    return -jax.nn.log_softmax(logits)[:, 0]


def _no_representation(model: Model) -> ConfigError:
    return ConfigError(
        f"algorithm='moon' with model={model.name!r}: the model sows no representation; MOON needs "
        "one (self.sow(REPRESENTATION, 'z', h), fedsim.models.base), as mlp, cnn, bn_cnn, lenet5, "
        "resnet18 and vgg11 do"
    )


def moon(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    mu=1.0,
    tau=0.5,
    server_optimizer: optax.GradientTransformation | None = None,
) -> FederatedAlgorithm:
    """MOON with contrastive weight ``mu`` and temperature ``tau`` (floats or traced arrays).

    >>> from fedsim.models import get_model
    >>> moon(get_model("mlp", 10), optax.sgd(0.1)).name
    'moon'
    """
    if model.represent is None:
        raise _no_representation(model)
    averaging = fedavg(model, client_optimizer, server_optimizer, name="moon")

    def represent(model_vars, x, train, key, mask):
        logits, z, state = model.represent(model_vars, x, train, key, mask)
        if z is None:
            raise _no_representation(model)
        return logits, z.reshape((z.shape[0], -1)), state

    def client_init(model_vars):
        return Previous(model_vars, jnp.array(False))

    def client_update(server_state, previous: Previous, task, dataset):
        received = server_state.model
        before = jax.tree.map(
            lambda p, g: jnp.where(previous.trained, p, g), previous.model, received
        )

        def loss_fn(params, state, x, y, mask, key):
            logits, z, new_state = represent(ModelVars(params, state), x, True, key, mask)
            z_glob = represent(received, x, False, key, mask)[1]
            z_prev = represent(before, x, False, key, mask)[1]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            per_example = ce + mu * contrastive_loss(z, z_glob, z_prev, tau)
            return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1), new_state

        result = local_train(model, client_optimizer, received, task, dataset, loss_fn=loss_fn)
        weight = task.num_examples.astype(jnp.float32)
        delta = jax.tree.map(
            lambda new, old: weight * (new - old), result.model.params, received.params
        )
        state = jax.tree.map(lambda s: weight * s, result.model.state)
        size = jnp.int32(dense_bytes(received))
        update = Update(delta, weight, state=state)
        return ClientResult(
            update, Previous(result.model, jnp.array(True)), result.loss, size, size
        )

    return averaging._replace(client_init=client_init, client_update=client_update)


SPEC = AlgorithmSpec(
    "moon",
    lambda hp, setup: moon(setup.model, setup.optimizer, hp["mu"], hp["tau"], server_optimizer(hp)),
    hparams={
        "mu": 1.0,  # weight of the contrastive term (official default; the paper: 5 on CIFAR-10)
        "tau": 0.5,  # temperature of the contrastive term
        **SERVER_SGD,
    },
    traceable=("mu", "tau", "server_lr"),
    check=lambda hp: check_ranges(hp, "moon", mu=">=0", tau=">0", server_lr=">0"),
)
