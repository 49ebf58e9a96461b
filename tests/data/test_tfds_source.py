"""TFDS datasets by name (mocked, no network), the offline Fashion-MNIST builder, and the fast
offline failure."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fedsim.data import fashion_mnist_offline, tfds_source
from fedsim.data.datasets import load_dataset
from fedsim.errors import ConfigError


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_dataset_by_name_with_mock_data(name, shape, tmp_path):
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_dataset(name, data_dir=str(tmp_path))
    assert data.x_train.shape == (30, *shape) and data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert data.y_test.shape == (30,) and data.num_classes == 10


def test_unprepared_dataset_without_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "network_reachable", lambda: False)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="dataset='cifar100' is not prepared") as err:
        load_dataset("cifar100", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value) and "tfds build cifar100" in str(err.value)


def test_network_probe_answers_within_seconds():
    start = time.monotonic()
    tfds_source.network_reachable(timeout=2.0)
    assert time.monotonic() - start < 10


def write_idx(directory, prefix, images, labels):
    import gzip

    with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0" * 16 + images.tobytes())
    with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0" * 8 + labels.tobytes())


def test_offline_fashion_mnist_builder_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    manual = tmp_path / "manual"
    manual.mkdir()
    arrays = {}
    for split, prefix, n in (("train", "train", 12), ("test", "t10k", 5)):
        arrays[split] = (
            rng.integers(0, 256, (n, 28, 28, 1), np.uint8),
            rng.integers(0, 10, n, np.uint8),
        )
        write_idx(manual, prefix, *arrays[split])
    assert fashion_mnist_offline.available(manual)
    builder = fashion_mnist_offline.FashionMnistOffline(
        data_dir=str(tmp_path / "tfds"), file_format="array_record"
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    for split, (images, labels) in arrays.items():
        source = builder.as_data_source(split=split)
        got = sorted((int(r["label"]), np.asarray(r["image"]).tobytes()) for r in source)
        expected = sorted((int(y), x.tobytes()) for x, y in zip(images, labels, strict=True))
        assert got == expected


@pytest.mark.skipif(
    not fashion_mnist_offline.available(), reason="Debian package dataset-fashion-mnist missing"
)
def test_real_fashion_mnist_prepared_offline(tmp_path):
    data = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.num_classes == 10 and 0.0 <= data.x_train.min() < data.x_train.max() <= 1.0
