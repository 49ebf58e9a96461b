"""A small causal character Transformer (Vaswani et al. 2017, 'Attention Is All You Need'; pre-norm
blocks as in GPT-2): token and learned position embeddings, ``layers`` blocks of causal multi-head
self-attention and a ReLU FFN (``4 dim``), final LayerNorm, a Dense readout over the vocabulary at
every position. Position ``t`` sees inputs ``0..t`` only and predicts input ``t + 1`` (the last
position predicts the window's label), so one window trains ``T`` next-character predictions
(``Model.sequence_targets``; the Shakespeare windows of Caldas et al. 2018, LEAF).

With ``factorized`` every projection — query, key, value, output (each a ``dim -> dim`` Dense, as in
Maestro's official code, SamuelHorvath/Maestro-LoD), both FFN layers and the readout — is ``U Vᵀ`` (Maestro);
embeddings, LayerNorms and biases stay dense.
"""

import flax.linen as nn
import jax.numpy as jnp

from fedsim.models.base import Model, factorized_model, from_flax
from fedsim.models.layers import Dense


class Block(nn.Module):
    dim: int
    heads: int
    factorized: bool

    @nn.compact
    def __call__(self, x):
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        h = nn.LayerNorm()(x)
        split = lambda t: t.reshape(batch, length, self.heads, head_dim)
        q, k, v = (
            split(Dense(dim, factorized=self.factorized, name=n)(h))
            for n in ("query", "key", "value")
        )
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((length, length), bool))
        weights = nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, dim)
        x = x + Dense(dim, factorized=self.factorized, name="out")(attended)
        h = nn.LayerNorm()(x)
        h = nn.relu(Dense(4 * dim, factorized=self.factorized, name="ffn_in")(h))
        return x + Dense(dim, factorized=self.factorized, name="ffn_out")(h)


class CharTransformer(nn.Module):
    num_classes: int
    dim: int = 64
    heads: int = 4
    layers: int = 2
    max_length: int = 80
    factorized: bool = False

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        length = tokens.shape[1]
        x = nn.Embed(self.num_classes, self.dim)(tokens.astype(jnp.int32))
        position = self.param("position", nn.initializers.normal(0.02), (self.max_length, self.dim))
        x = x + position[:length]
        for i in range(self.layers):
            x = Block(self.dim, self.heads, self.factorized, name=f"block_{i}")(x)
        x = nn.LayerNorm()(x)
        return Dense(self.num_classes, factorized=self.factorized, name="readout")(x)


def make(
    num_classes: int,
    dim: int = 64,
    heads: int = 4,
    layers: int = 2,
    max_length: int = 80,
    factorized: bool = False,
) -> Model:
    """Causal character Transformer: token windows ``[B, T]`` (``T <= max_length``) to next-token
    logits ``[B, T, num_classes]``; ``num_classes`` is the vocabulary size; ``factorized`` makes every
    projection ``U Vᵀ`` (Maestro)."""
    if dim % heads:
        raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
    build = lambda low: CharTransformer(num_classes, dim, heads, layers, max_length, low)
    dense = from_flax("transformer", build(False))
    model = factorized_model(dense, from_flax("transformer", build(True))) if factorized else dense
    return model._replace(sequence_targets=True)
