"""FedRep: Collins, Hassani, Mokhtari, Shakkottai, 'Exploiting Shared Representations for
Personalized Federated Learning', ICML 2021 (Algorithm 1; official code github.com/lgcollins/FedRep).

FedPer's split (``fedsim.algorithms.fedper``): a shared representation ``phi`` and a personal head
``h_k``, the last ``personal_layers`` top-level Dense layers. Each sampled client first trains its head
with the representation frozen, ``h_k <- GRD(f_k(h, phi), h)`` for ``head_epochs`` epochs, then the
representation with its new head frozen, ``phi_k <- GRD(f_k(h_k, phi), phi)`` for the round's
``local_epochs`` epochs; each phase runs the client optimiser afresh with the frozen leaves' updates
set to zero. As in FedPer, the server averages ``phi_k`` weighted by ``n_k`` through the server
optimiser (SGD at 1: the plain mean), the head never leaves the client, and ``phi`` with the BatchNorm
statistics is all that is sent.

Schedule: the round's task (``local_epochs`` epochs) drives the representation epochs. The head epochs
visit the same client's examples, each epoch once in a fresh order drawn under
``fold_in(task key, 1)``, in batches of the same size, so one compiled round serves every client; a
straggler's truncation (``straggler_work``) shortens its representation epochs only. The reported loss
is the mean over the real steps of both phases.
"""

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientTask, FederatedAlgorithm
from fedsim.algorithms.fedper import HPARAMS, fedper, head_layers
from fedsim.algorithms.local import LocalResult, local_train
from fedsim.algorithms.spec import AlgorithmSpec, check_ranges, server_optimizer
from fedsim.data.batching import client_batches
from fedsim.models.base import Model


def head_task(task: ClientTask, epochs: int) -> ClientTask:
    """``epochs`` fresh epochs over the examples of ``task``'s client, in batches of its size."""
    batch_key, key = jax.random.split(jax.random.fold_in(task.key, 1))
    indices, mask = client_batches(
        batch_key,
        task.examples,
        task.num_examples,
        epochs=epochs,
        batch_size=task.batch_indices.shape[1],
    )
    return task._replace(batch_indices=indices, batch_mask=mask, key=key)


def fedrep(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    personal_layers: int = 1,
    head_epochs: int = 10,
    name: str = "fedrep",
) -> FederatedAlgorithm:
    """FedPer whose clients train head, then representation.

    >>> from fedsim.models import get_model
    >>> fedrep(get_model("mlp", 10), optax.sgd(0.1)).name
    'fedrep'
    """

    def only(train_head: bool, params) -> optax.GradientTransformation:
        """The client optimiser on the head (or on the rest), zero updates elsewhere."""
        head = head_layers(params, personal_layers, name)
        labels = {k: "train" if (k in head) == train_head else "frozen" for k in params}
        transforms = {"train": client_optimizer, "frozen": optax.set_to_zero()}
        return optax.multi_transform(transforms, labels)

    def train(start, task, dataset):
        heads = head_task(task, head_epochs)
        first = local_train(model, only(True, start.params), start, heads, dataset)
        second = local_train(model, only(False, start.params), first.model, task, dataset)
        steps = first.num_steps + second.num_steps
        loss = first.loss * first.num_steps + second.loss * second.num_steps
        return LocalResult(second.model, loss / jnp.maximum(steps, 1), steps)

    return fedper(model, client_optimizer, server_optimizer, personal_layers, name, train)


def _build(hparams: dict, setup) -> FederatedAlgorithm:
    return fedrep(
        setup.model,
        setup.optimizer,
        server_optimizer(hparams),
        hparams["personal_layers"],
        hparams["head_epochs"],
    )


SPEC = AlgorithmSpec(
    "fedrep",
    _build,
    hparams={
        "head_epochs": 10,  # epochs of head training (representation frozen) before local_epochs
        **HPARAMS,
    },
    traceable=("server_lr",),
    check=lambda hp: check_ranges(
        hp, "fedrep", head_epochs=">0", personal_layers=">0", server_lr=">0"
    ),
)
