"""Datasets by TFDS name, read through array_record data sources (``tfds.data_source``), so
TensorFlow is not required for tensor features.

A dataset must be prepared under ``data_dir`` (TFDS's default when empty) or be obtainable: with no
network, ``load_tfds`` fails within seconds with one line saying how to provide it, instead of letting
TFDS retry a download for minutes. ``fashion_mnist`` is prepared offline from the Debian package's
files when they are installed (``fedsim.data.fashion_mnist_offline``).
"""

import functools
import socket

import numpy as np
import tensorflow_datasets as tfds

from fedsim.data import fashion_mnist_offline
from fedsim.data.arrays import ArrayDataset, freeze
from fedsim.errors import ConfigError

SPLITS = ("train", "test")


class UnknownDataset(ConfigError):
    """``name`` is not a TFDS dataset name."""


def network_reachable(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """Whether TFDS's download host answers within ``timeout`` seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _sources(name: str, data_dir: str | None):
    """The train and test data sources, preparing the dataset when that is possible."""
    try:
        return tfds.data_source(name, split=list(SPLITS), data_dir=data_dir, download=False)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):  # ValueError: not a TFDS name
        raise UnknownDataset(f"dataset={name!r} is not a TFDS dataset name") from None
    except (AssertionError, FileNotFoundError, NotImplementedError, KeyError) as err:
        if tfds.builder(name, data_dir=data_dir).is_prepared():
            raise ConfigError(
                f"dataset={name!r} is prepared but not as array_record ({err.__class__.__name__}); "
                f"rebuild it with tfds build {name} --file_format=array_record"
            ) from None
    if name == "fashion_mnist" and fashion_mnist_offline.available():
        builder = fashion_mnist_offline.FashionMnistOffline(
            data_dir=data_dir, file_format="array_record"
        )
        config = tfds.download.DownloadConfig(manual_dir=str(fashion_mnist_offline.DEBIAN_DIR))
        builder.download_and_prepare(download_config=config)
        return [builder.as_data_source(split=s) for s in SPLITS]
    if not network_reachable():
        where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets)"
        raise ConfigError(
            f"dataset={name!r} is not prepared in {where} and there is no network to download it; "
            f"prepare it where there is (tfds build {name} --file_format=array_record) and set "
            "data_dir, or use an offline dataset (mnist_subset, digits, fashion_mnist via the Debian "
            "package dataset-fashion-mnist)"
        )
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return [builder.as_data_source(split=s) for s in SPLITS]


def _read_all(source, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r[image_key]) for r in records])
    labels = np.asarray([r[label_key] for r in records], np.int32)
    return images, labels


def _num_classes(name: str, label_key: str, labels: list[np.ndarray]) -> int:
    try:
        feature = tfds.builder(name).info.features[label_key]
        return int(feature.num_classes)
    except (AttributeError, KeyError, tfds.core.registered.DatasetNotFoundError):
        return int(max(y.max(initial=0) for y in labels)) + 1


@functools.lru_cache(maxsize=4)
def load_tfds(name: str, data_dir: str | None = None) -> ArrayDataset:
    """An image-classification TFDS dataset as float32 ``[N, H, W, C]`` in [0, 1] plus labels.

    >>> with tfds.testing.mock_data(num_examples=8):  # doctest: +SKIP
    ...     load_tfds("cifar10").x_train.shape
    (8, 32, 32, 3)
    """
    train, test = _sources(name, data_dir or None)
    image_key, label_key = "image", "label"
    x_train, y_train = _read_all(train, image_key, label_key)
    x_test, y_test = _read_all(test, image_key, label_key)
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    as_float = lambda x: (x.astype(np.float32) / scale).reshape(
        x.shape if x.ndim == 4 else x.shape + (1,)
    )
    num_classes = _num_classes(name, label_key, [y_train, y_test])
    return freeze(
        ArrayDataset(name, as_float(x_train), y_train, as_float(x_test), y_test, num_classes)
    )
