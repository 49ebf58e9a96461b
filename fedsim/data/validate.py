"""Malformed data is refused before any work, with one line naming where it is."""

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.federated import FederatedData
from fedsim.errors import ConfigError


def check_labels(dataset: ArrayDataset) -> None:
    """Every label lies in ``[0, num_classes)``."""
    for split, labels in (("train", dataset.y_train), ("test", dataset.y_test)):
        bad = np.flatnonzero((labels < 0) | (labels >= dataset.num_classes))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"dataset {dataset.name!r}: y_{split}[{i}]={int(labels[i])} is outside "
                f"[0, {dataset.num_classes}) ({bad.size} such labels)"
            )
    if len(dataset.y_train) == 0 or len(dataset.y_test) == 0:
        raise ConfigError(f"dataset {dataset.name!r} has an empty train or test split")


def check_federation(data: FederatedData) -> None:
    """No empty client, and no non-finite feature in any client's examples or in the test set."""
    empty = np.flatnonzero(data.num_examples == 0)
    if empty.size:
        raise ConfigError(
            f"client {int(empty[0])} has no training examples ({empty.size} such clients)"
        )
    finite = np.isfinite(data.x_train.reshape(len(data.x_train), -1)).all(axis=1)
    if not finite.all():
        real = np.arange(data.client_indices.shape[1])[None, :] < data.num_examples[:, None]
        bad = real & ~finite[data.client_indices]
        client = int(np.flatnonzero(bad.any(axis=1))[0])
        example = int(data.client_indices[client][bad[client]][0])
        raise ConfigError(
            f"client {client} has non-finite (NaN/Inf) features in training example {example} "
            f"({int(bad.any(axis=1).sum())} such clients)"
        )
    test_finite = np.isfinite(data.x_test.reshape(len(data.x_test), -1)).all(axis=1)
    if not test_finite.all():
        raise ConfigError(
            f"test example {int(np.flatnonzero(~test_finite)[0])} has non-finite (NaN/Inf) features"
        )
