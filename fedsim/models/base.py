"""A model as two pure functions over plain pytrees, so the engine can vmap over clients.

Flax modules are used functionally: ``init(key, sample_x) -> ModelVars`` and
``apply(vars, x, train, key, mask=None) -> (logits, new_state)``. Trainable parameters and
non-trainable state (e.g. BatchNorm running statistics) are kept apart so gradients only touch
``params``. ``mask`` (bool ``[B]``) marks the real examples of a padded batch; modules whose
``__call__`` takes a ``mask`` argument (the normalised models) keep padding out of batch statistics.

A module may sow its representation of each example (the classifier's input, ``[B, ...]``) with
``self.sow(REPRESENTATION, "z", h)``; ``Model.represent`` returns it next to the logits (MOON's
contrastive loss reads it). ``mlp``, ``cnn``, ``bn_cnn``, ``lenet5``, ``resnet18`` and ``vgg11`` do.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedsim.compress import lowrank
from fedsim.models.layers import MACS, RANKS

PyTree = Any
REPRESENTATION = "representation"  # collection a module sows its representation into (once a call)


class ModelVars(NamedTuple):
    """A model's variables: trainable ``params`` and non-trainable ``state`` (may be empty)."""

    params: PyTree
    state: PyTree


class Model(NamedTuple):
    """Pure functions of one network.

    ``apply(vars, x, train, key, mask=None)`` returns ``(logits, new_state)``; ``new_state`` equals
    ``vars.state`` when ``train`` is False or the network has no mutable state. ``macs(vars, x)`` is
    the multiply-accumulates per example of the deployed network, summed over the layers of
    ``fedsim.models.layers`` (factorised layers at their kept rank). ``represent(vars, x, train, key,
    mask=None)`` returns ``(logits, z, new_state)``: ``apply``'s pair and ``z``, what the module sows
    under ``REPRESENTATION`` (None if it sows nothing); None for a model without one.
    ``sequence_targets``: the logits have one row per input position (``[B, T, V]``, a causal language
    model), trained and scored against each window's next-token targets ``[B, T]``
    (``fedsim.data.sequence``) instead of one label per window.
    """

    name: str
    init: Callable[[jax.Array, jax.Array], ModelVars]
    apply: Callable[..., tuple[jax.Array, PyTree]]
    macs: Callable[[ModelVars, jax.Array], jax.Array] | None = None
    represent: Callable[..., tuple[jax.Array, jax.Array | None, PyTree]] | None = None
    sequence_targets: bool = False


def from_flax(name: str, module: nn.Module) -> Model:
    """Wraps a Flax module whose ``__call__(x, train[, mask])`` returns logits."""
    takes_mask = "mask" in inspect.signature(type(module).__call__).parameters

    def init(key, sample_x):
        variables = module.init({"params": key, "dropout": key}, sample_x, train=False)
        variables = dict(variables)
        params = variables.pop("params")
        variables.pop(MACS, None)
        variables.pop(REPRESENTATION, None)
        return ModelVars(params=params, state=variables)

    def apply(model_vars, x, train, key, mask=None):
        variables = {"params": model_vars.params, **model_vars.state}
        mutable = list(model_vars.state.keys()) if train else False
        extra = {"mask": mask} if takes_mask and mask is not None else {}
        out = module.apply(
            variables, x, train=train, rngs={"dropout": key}, mutable=mutable, **extra
        )
        if train and mutable:
            logits, new_state = out
            return logits, dict(new_state)
        logits = out[0] if isinstance(out, tuple) else out
        return logits, model_vars.state

    def represent(model_vars, x, train, key, mask=None):
        variables = {"params": model_vars.params, **model_vars.state}
        mutable = [*model_vars.state, REPRESENTATION] if train else [REPRESENTATION]
        extra = {"mask": mask} if takes_mask and mask is not None else {}
        logits, sown = module.apply(
            variables, x, train=train, rngs={"dropout": key}, mutable=mutable, **extra
        )
        sown = dict(sown)
        z = sown.pop(REPRESENTATION, None)
        z = None if z is None else jax.tree.leaves(z)[0]
        return logits, z, sown if train else model_vars.state

    def macs(model_vars, x):
        variables = {"params": model_vars.params, **model_vars.state}
        _, sown = module.apply(variables, x, train=False, mutable=[MACS])
        counts = jax.tree.leaves(sown.get(MACS, {}))
        return sum(counts, jnp.int32(0))

    return Model(name=name, init=init, apply=apply, macs=macs, represent=represent)


def count_params(tree: PyTree) -> int:
    """Number of scalar entries in a pytree."""
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(tree)))


def factorized_model(dense: Model, factored: Model) -> Model:
    """``factored`` initialised Maestro's way (as its official code does): the dense network's usual initialisation,
    factorised by SVD, every layer at full rank."""

    def init(key, sample_x):
        start = dense.init(key, sample_x)
        shape = factored.init(key, sample_x)
        params = lowrank.factorize(start.params, shape.params)
        return ModelVars(params, {**start.state, RANKS: shape.state[RANKS]})

    return factored._replace(init=init)
