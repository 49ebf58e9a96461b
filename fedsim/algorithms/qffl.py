"""q-FFL: Li, Sanjabi, Beirami, Smith, 'Fair Resource Allocation in Federated Learning', ICLR 2020
(q-FedAvg, Algorithm 3; official code litian96/fair_flearn).

q-FFL minimises ``f_q(w) = sum_k p_k F_k(w)^(q+1) / (q+1)``: ``q = 0`` is FedAvg's objective, a larger
``q`` weighs clients with a high loss more, for a fairer spread of accuracy over clients
(``personal_acc_var``, ``personal_acc_worst10``). q-FedAvg: each sampled client k evaluates
``F_k = F_k(w)``, the loss of the received model on all its training data (eval mode), runs FedAvg's
local training to ``wbar_k`` and, with the Lipschitz estimate ``L = 1 / lr``, forms

    dw_k = L (w - wbar_k),   D_k = F_k^q dw_k,   h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q;

the server steps ``w <- w - sum_k D_k / sum_k h_k``. The paper samples clients with probability
proportional to ``n_k`` and sums them unweighted; fedsim samples uniformly, so both sums weigh client k
by ``n_k`` (the same expected step), and ``q = 0`` is FedAvg exactly. The message is an ``Update``
with delta ``-n_k D_k`` and weight ``n_k h_k`` (BatchNorm statistics weighted alike), so FedAvg's server
step (SGD at 1) is the one above. Under DP every client weighs 1: the clipped update is ``-D_k / h_k``
and the server takes the fixed-denominator mean of those. ``F_k`` is raised to powers as
``F_k + 1e-10``, as in the official code.
"""

import jax
import jax.numpy as jnp
import optax

from fedsim.algorithms.base import ClientResult, FederatedAlgorithm, Update
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.local import local_train, masked_cross_entropy
from fedsim.algorithms.spec import SERVER_SGD, AlgorithmSpec, check_ranges, server_optimizer
from fedsim.compress.encode import dense_bytes
from fedsim.models.base import Model


def qffl(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    lr,
    server_optimizer: optax.GradientTransformation | None = None,
    q: float = 1.0,
    name: str = "qffl",
) -> FederatedAlgorithm:
    """q-FedAvg (``lr``: the client learning rate, ``1 / L``).

    >>> from fedsim.models import get_model
    >>> qffl(get_model("mlp", 10), optax.sgd(0.1), 0.1).name
    'qffl'
    """
    base = fedavg(model, client_optimizer, server_optimizer, name=name)

    def loss_at(model_vars, task, dataset):
        """``F_k``: mean loss of ``model_vars`` over the client's training examples, eval mode."""
        real = jnp.arange(task.examples.shape[0]) < task.num_examples
        logits, _ = model.apply(model_vars, dataset.x[task.examples], False, task.key)
        return masked_cross_entropy(logits, dataset.y[task.examples], real) + 1e-10

    def client_update(server_state, client_state, task, dataset):
        received = server_state.model
        loss = loss_at(received, task, dataset)
        result = local_train(model, client_optimizer, received, task, dataset)
        dw = jax.tree.map(lambda old, new: (old - new) / lr, received.params, result.model.params)
        h = q * loss ** (q - 1) * optax.tree.norm(dw, squared=True) + loss**q / lr
        n = task.num_examples.astype(jnp.float32)
        delta = jax.tree.map(lambda d: -n * loss**q * d, dw)
        state = jax.tree.map(lambda s: n * h * s, result.model.state)
        size = jnp.int32(dense_bytes(received))
        return ClientResult(Update(delta, n * h, state=state), (), result.loss, size, size)

    return base._replace(client_update=client_update)


def _build(hparams: dict, setup) -> FederatedAlgorithm:
    server = server_optimizer(hparams)
    return qffl(setup.model, setup.optimizer, setup.lr, server, hparams["q"])


SPEC = AlgorithmSpec(
    "qffl",
    _build,
    hparams={
        "q": 1.0,  # fairness: clients weigh by their loss to the power q (0: FedAvg)
        **SERVER_SGD,
    },
    traceable=("q", "server_lr"),
    check=lambda hp: check_ranges(hp, "qffl", q=">=0", server_lr=">0"),
)
