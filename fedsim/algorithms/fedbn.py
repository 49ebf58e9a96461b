"""FedBN: Li, Jiang, Zhang, Kamp, Dou, 'FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization', ICLR 2021 (official code med-air/FedBN).

FedAvg in which every normalisation leaf (scale, bias, running mean and variance) stays on its client and
is never sent or averaged; all other parameters are averaged weighted by ``n_k``. A client deploys the
server's shared weights with its own normalisation, its statistics re-measured on its own training
data for those weights (``reestimate_bn``; the stored ones belong to its last participation's weights). The server also keeps the round's mean of the
clients' normalisation, used only to report ``global_acc`` (it is never sent to a client).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import norm_stats
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, dense_personal
from fedsim.algorithms.local import local_train
from fedsim.algorithms.spec import AlgorithmSpec
from fedsim.compress import masks
from fedsim.compress.encode import dense_bytes
from fedsim.errors import ConfigError
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars


class Contribution(NamedTuple):
    """One client's FedBN message: its ``n_k``-weighted weights (not a delta) and statistics."""

    params: optax.Params  # n_k W_k, normalisation leaves included (the server's report-only mean)
    state: optax.Params  # n_k times its BatchNorm statistics
    weight: jax.Array  # float32 n_k


class ClientState(NamedTuple):
    norm: dict  # this client's normalisation parameters, ``masks.split_norm`` layout
    state: optax.Params  # its BatchNorm statistics


def fedbn(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    reestimate_bn: bool = True,
    name: str = "fedbn",
) -> FederatedAlgorithm:
    """FedAvg with personal normalisation layers; with ``reestimate_bn`` a client deploys statistics
    re-measured for the current shared weights on its own data (``norm_stats``)."""
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def own_model(server_state, own: ClientState) -> ModelVars:
        return ModelVars(masks.merge_norm(server_state.model.params, own.norm), own.state)

    def client_init(model_vars):
        if not any(jax.tree.leaves(masks.norm_flags(model_vars.params))):
            raise ConfigError(
                f"algorithm={name!r} with model={model.name!r}: the model has no normalisation "
                "layers, so FedBN would be FedAvg; use a model with them (e.g. bn_cnn) or fedavg"
            )
        return ClientState(masks.split_norm(model_vars.params)[1], model_vars.state)

    def client_update(server_state, own: ClientState, task, dataset):
        start = own_model(server_state, own)
        result = local_train(model, client_optimizer, start, task, dataset)
        weight = task.num_examples.astype(jnp.float32)
        params = jax.tree.map(lambda p: weight * p, result.model.params)
        stats = jax.tree.map(lambda s: weight * s, result.model.state)
        shared_bytes = jnp.int32(dense_bytes(masks.split_norm(start.params)[0]))
        return ClientResult(
            contribution=Contribution(params, stats, weight),
            client_state=ClientState(masks.split_norm(result.model.params)[1], result.model.state),
            loss=result.loss,
            up_bytes=shared_bytes,
            down_bytes=shared_bytes,
        )

    def server_update(server_state, total):
        mean = lambda tree: jax.tree.map(lambda leaf: leaf / total.weight, tree)
        return ServerState(ModelVars(mean(total.params), mean(total.state)))

    def personalize(server_state, own: ClientState, task, dataset):
        return dense_personal(refresh(own_model(server_state, own), task, dataset))

    return FederatedAlgorithm(
        name, ServerState, client_init, client_update, server_update, personalize
    )


SPEC = AlgorithmSpec(
    "fedbn", lambda hp, setup: fedbn(setup.model, setup.optimizer, setup.reestimate_bn)
)
