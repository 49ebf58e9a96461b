"""LotteryFL: Li, Sun, Li, Chen, Li, 'LotteryFL: Personalized and Communication-Efficient Federated
Learning with Lottery Ticket Hypothesis on Non-IID Datasets', 2020 (official code
charleslipku/LotteryFL).

A client receives its masked server model; when that model's local validation accuracy is above
``prune_threshold`` and its density above the target, it prunes ``min(prune_rate, 1 - target/density)``
of the surviving received weights per layer and rewinds the survivors and every unpruned parameter to the
initialisation theta_0, then trains. The server averages each coordinate over the clients that keep it
(unweighted). Normalisation layers are shared and averaged like biases. A client deploys its mask applied
to the server model.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms import masked, norm_stats
from fedsim.algorithms.base import ClientResult, FederatedAlgorithm
from fedsim.algorithms.spec import AlgorithmSpec, ClientSetup
from fedsim.compress import masks, pruning
from fedsim.compress.encode import dense_bytes, masked_bytes
from fedsim.models.base import Model, ModelVars


class ServerState(NamedTuple):
    model: ModelVars
    initial: optax.Params  # theta_0, the rewinding target


def lotteryfl(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    *,
    target_density: float = 0.1,
    prune_rate: float = 0.2,
    prune_threshold: float = 0.2,
    scope: str = "layer",
    weight_by_examples: bool = False,
    reestimate_bn: bool = True,
    name: str = "lotteryfl",
) -> FederatedAlgorithm:
    """LotteryFL with its code's defaults (start accuracy 0.2, rate 0.2 per prune event); with
    ``reestimate_bn`` the deployed model's BatchNorm statistics are re-measured on the client's data."""
    refresh = norm_stats.reestimator(model, reestimate_bn)

    def server_init(model_vars):
        return ServerState(model_vars, model_vars.params)

    def client_init(model_vars):
        return masks.init_mask(model_vars.params)

    def client_update(server_state, mask, task, dataset):
        server = server_state.model
        received = ModelVars(masks.apply_mask(server.params, mask), server.state)
        accuracy = masked.validation_accuracy(model, received, task, dataset)
        current = masks.density(mask, received.params)
        prune = (accuracy > prune_threshold) & (current > target_density)
        rate = jnp.clip(1.0 - target_density / current, 0.0, prune_rate)
        pruned = pruning.magnitude_prune(received.params, mask, rate, scope)
        new_mask = jax.tree.map(lambda p, m: jnp.where(prune, p, m), pruned, mask)
        rewound = jax.tree.map(
            lambda theta0, w: jnp.where(prune, theta0, w), server_state.initial, received.params
        )
        start = received._replace(params=rewound)
        result = masked.masked_local_train(model, client_optimizer, start, new_mask, task, dataset)

        weight = masked.aggregation_weight(task, weight_by_examples)
        contribution = masked.masked_model_contribution(
            result.model, server.params, new_mask, weight
        )
        state_bytes = dense_bytes(server.state)
        return ClientResult(
            contribution=contribution,
            client_state=new_mask,
            loss=result.loss,
            up_bytes=masked_bytes(result.model.params, new_mask) + state_bytes,
            down_bytes=masked_bytes(received.params, mask) + state_bytes,
        )

    def server_update(server_state, total):
        return server_state._replace(model=masked.masked_server_model(total, server_state.model))

    def personalize(server_state, mask, task, dataset):
        server = server_state.model
        deployed = ModelVars(masks.apply_mask(server.params, mask), server.state)
        return masked.personal_model(refresh(deployed, task, dataset), mask)

    return FederatedAlgorithm(
        name, server_init, client_init, client_update, server_update, personalize
    )


def _build(hp: dict, setup: ClientSetup) -> FederatedAlgorithm:
    return lotteryfl(
        setup.model,
        setup.optimizer,
        reestimate_bn=setup.reestimate_bn,
        **masked.pruning_kwargs(hp),
    )


SPEC = AlgorithmSpec(
    "lotteryfl",
    _build,
    hparams={
        **masked.PRUNING,
        "prune_threshold": 0.2,  # its code: prune once validation accuracy exceeds 20 %
    },
    check=lambda hp: masked.check_pruning(hp, "lotteryfl"),
    needs_validation=True,
)
