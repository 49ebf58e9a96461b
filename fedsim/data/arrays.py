"""The in-memory dataset record every loader returns (``fedsim.data.datasets``,
``fedsim.data.tfds_source``, ``fedsim.data.shakespeare``)."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A dataset held in memory as numpy arrays."""

    name: str
    x_train: np.ndarray  # float32 [N, H, W, C] in [0, 1]
    y_train: np.ndarray  # int32 [N]
    x_test: np.ndarray  # float32 [M, H, W, C] in [0, 1]
    y_test: np.ndarray  # int32 [M]
    num_classes: int


def freeze(dataset: ArrayDataset) -> ArrayDataset:
    """Marks the arrays read-only so that callers cannot corrupt the cache."""
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array.flags.writeable = False
    return dataset
