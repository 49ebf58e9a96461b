"""Next-character model for Shakespeare: embedding, stacked LSTM, dense over the vocabulary.

The defaults are LEAF's reference model (Caldas et al. 2018, 'LEAF: A Benchmark for Federated
Settings'): embedding 8, two LSTM layers of 256, predicting the character after an 80-character window.
"""

import flax.linen as nn
import jax.numpy as jnp

from fedsim.models.base import Model, from_flax


class CharLSTM(nn.Module):
    num_classes: int
    embed: int = 8
    hidden: int = 256
    layers: int = 2

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        x = nn.Embed(self.num_classes, self.embed)(tokens.astype(jnp.int32))
        for _ in range(self.layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)
        return nn.Dense(self.num_classes)(x[:, -1])


def make(num_classes: int, embed: int = 8, hidden: int = 256, layers: int = 2) -> Model:
    """Character LSTM over token windows ``[B, T]``; ``num_classes`` is the vocabulary size."""
    module = CharLSTM(num_classes=num_classes, embed=embed, hidden=hidden, layers=layers)
    return from_flax("char_lstm", module)
