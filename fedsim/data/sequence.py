"""Next-token targets of token windows, for causal language models trained on every position.

A window ``x = s[i : i + T]`` labelled with the token after it, ``y = s[i + T]`` (the Shakespeare
windows of Caldas et al. 2018, LEAF), has the next-token targets ``s[i + 1 : i + T + 1]``: the
window shifted by one, then its label. A causal model (Vaswani et al. 2017) predicts target ``t``
from inputs ``0..t``, so the last target is the window's label.
"""

import dataclasses

import numpy as np

from fedsim.data.federated import FederatedData
from fedsim.errors import ConfigError


def next_token_targets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[N, T]`` targets of windows ``x [N, T]`` with labels ``y [N]``: ``x[:, 1:]`` then ``y``."""
    return np.concatenate([x[:, 1:].astype(y.dtype), y[:, None]], axis=1)


def with_next_token_targets(data: FederatedData) -> FederatedData:
    """``data`` with every label replaced by its window's next-token targets (train and test);
    client tables and label histograms (of the windows' own labels) are unchanged."""
    if data.x_train.ndim != 2 or not np.issubdtype(data.x_train.dtype, np.integer):
        raise ConfigError(
            f"a sequence model needs token windows [N, T] of integers; dataset {data.name!r} has "
            f"{data.x_train.dtype} inputs of shape {data.x_train.shape[1:]}"
        )
    return dataclasses.replace(
        data,
        y_train=next_token_targets(data.x_train, data.y_train),
        y_test=next_token_targets(data.x_test, data.y_test),
    )
