"""FedAvg with a compressed uplink: each client sends ``C(u + e)`` instead of its update ``u = x_k - x``
and, with error feedback, keeps ``e <- u + e - C(u + e)`` for the next round it is sampled (Stich,
Cordonnier, Jaggi, 'Sparsified SGD with Memory', NeurIPS 2018; in FL e.g. Sattler, Wiedemann, Müller,
Samek, 'Robust and Communication-Efficient Federated Learning from Non-IID Data', 2019). The residual
``e`` is per-client state, stacked ``[C, ...]`` by the engine like SCAFFOLD's control variates. The
compressors and their byte counts are ``fedsim.compress.uplink``'s:

- ``fedavg_topk``: top-k sparsification (``fedavg_topk.fraction``, per leaf or ``global``), each
  leaf sent by the sparse rule ``min(4n, ceil(n/8) + 4z, 8z)``; error feedback on by default.
- ``fedavg_qsgd``: QSGD (Alistarh et al., NeurIPS 2017) at ``s = 2^bits - 1`` levels per leaf with
  the client's PRNG key, ``4 + ceil(n (bits + 1) / 8)`` bytes a leaf; unbiased, no error feedback.
- ``fedavg_sign``: scaled sign ``(||v||_1 / n) sign(v)`` per leaf (Bernstein et al., 'signSGD',
  ICML 2018; with error feedback, Karimireddy et al., 'Error Feedback Fixes SignSGD', ICML 2019),
  ``4 + ceil(n / 8)`` bytes a leaf.

The server is FedAvg's: the ``n_k``-weighted mean of the decoded messages through the server optimiser.
Every compressor is positively homogeneous, so the client compresses its weighted delta ``n_k (u + e)``
and sends ``n_k C(u + e)`` as an ``Update``. Non-trainable model state (BatchNorm statistics) and the
downlink stay dense, counted as FedAvg counts them.

Under DP (``fedsim.privacy``) the client compresses first; DP-FedAvg then clips the compressed update,
a scalar multiple of it, so its encoding and byte count are unchanged, and the server adds the noise to
the sum of clipped messages: the noise is not compressed, and the clip bounds each client's message
whatever the compressor did. The residual keeps the compression error before clipping and never
leaves the client.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import FederatedAlgorithm
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.spec import (
    SERVER_SGD,
    AlgorithmSpec,
    ClientSetup,
    check_choice,
    check_ranges,
    server_optimizer,
)
from fedsim.compress import uplink
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model

COMPRESS_STREAM = 1  # the compressor's key is ``fold_in(task.key, COMPRESS_STREAM)``


def compressed_fedavg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    compress: Callable,
    error_feedback: bool,
    server_optimizer: optax.GradientTransformation | None = None,
    name: str = "fedavg_compressed",
) -> FederatedAlgorithm:
    """FedAvg whose clients send ``compress(delta, key) -> (decoded delta, int32 bytes)`` of their
    weighted delta (plus ``n_k`` times their residual with ``error_feedback``).

    >>> from fedsim.models import get_model
    >>> top_k = lambda tree, key: uplink.top_k(tree, 0.1)
    >>> compressed_fedavg(get_model("mlp", 10), optax.sgd(0.1), top_k, True).name
    'fedavg_compressed'
    """
    base = fedavg(model, client_optimizer, server_optimizer, name=name)

    def client_init(model_vars):
        return jax.tree.map(jnp.zeros_like, model_vars.params) if error_feedback else ()

    def client_update(server_state, residual, task, dataset):
        result = base.client_update(server_state, (), task, dataset)
        sent = result.contribution
        delta = sent.delta
        if error_feedback:
            delta = jax.tree.map(lambda d, e: d + sent.weight * e, delta, residual)
        message, message_bytes = compress(delta, jax.random.fold_in(task.key, COMPRESS_STREAM))
        if error_feedback:
            residual = jax.tree.map(lambda d, m: (d - m) / sent.weight, delta, message)
        return result._replace(
            contribution=sent._replace(delta=message),
            client_state=residual,
            up_bytes=message_bytes + dense_bytes(server_state.model.state),
        )

    return base._replace(client_init=client_init, client_update=client_update)


def _spec(name: str, hparams: dict, traceable: tuple, compressor: Callable, check=None):
    """The spec of ``compressed_fedavg`` with ``compressor(hparams) -> compress``, FedAvg's server
    keys and ``check(hparams)`` (if any) after the server learning rate's."""

    def build(hp: dict, setup: ClientSetup) -> FederatedAlgorithm:
        feedback = hp.get("error_feedback", False)
        server = server_optimizer(hp)
        return compressed_fedavg(
            setup.model, setup.optimizer, compressor(hp), feedback, server, name
        )

    def check_all(hp: dict) -> None:
        check_ranges(hp, name, server_lr=">0")
        if check is not None:
            check(hp)

    hparams = {**SERVER_SGD, **hparams}
    return AlgorithmSpec(name, build, hparams, ("server_lr", *traceable), check_all)


def _check_topk(hp: dict) -> None:
    check_ranges(hp, "fedavg_topk", fraction="(0,1]")
    check_choice(hp, "fedavg_topk", "scope", uplink.SCOPES)


def _check_bits(hp: dict) -> None:
    bits = hp["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 23:
        raise ConfigError(f"fedavg_qsgd.bits={bits} must be an integer in [1, 23]")


TOPK = _spec(
    "fedavg_topk",
    {
        "fraction": 0.01,  # top-k: each client sends k = ceil(fraction n) coordinates
        "scope": "layer",  # n counts each leaf ('layer') or the whole update ('global')
        "error_feedback": True,  # error feedback: keep what was not sent, add it to the next update
    },
    ("fraction",),
    lambda hp: lambda tree, _: uplink.top_k(tree, hp["fraction"], hp["scope"]),
    _check_topk,
)

QSGD = _spec(
    "fedavg_qsgd",
    {
        "bits": 2,  # QSGD: s = 2^bits - 1 levels per leaf, bits + 1 bits a coordinate with its sign
    },
    (),
    lambda hp: lambda tree, key: uplink.qsgd(tree, key, hp["bits"]),
    _check_bits,
)

SIGN = _spec(
    "fedavg_sign",
    {
        "error_feedback": True,  # error feedback: keep what was not sent, add it to the next update
    },
    (),
    lambda hp: lambda tree, _: uplink.scaled_sign(tree),
)
