"""A TFDS builder of our own that prepares Fashion-MNIST (Xiao et al. 2017) from local idx files,
e.g. those of the Debian package ``dataset-fashion-mnist``.

Debian re-gzipped the official files, so TFDS's own ``fashion_mnist`` checksums do not match them;
this builder reads the files through ``manual_dir`` instead and writes array_record with plain tensor
features, so neither TensorFlow nor the network is needed.
"""

import gzip
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": "train", "test": "t10k"}


def idx_arrays(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 28, 28, 1]`` and labels ``uint8 [N]`` from ``PREFIX-*-ubyte.gz``."""
    with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def available(directory: Path = DEBIAN_DIR) -> bool:
    return all(
        (directory / f"{p}-{kind}-ubyte.gz").exists()
        for p in FILES.values()
        for kind in ("images-idx3", "labels-idx1")
    )


class FashionMnistOffline(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST, 60,000 train / 10,000 test 28x28 grey images, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Install the Debian package dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist) "
        "or pass a manual_dir holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz."
    )

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self, features=features, supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        directory = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(directory, p) for split, p in FILES.items()}

    def _generate_examples(self, directory, prefix):
        images, labels = idx_arrays(directory, prefix)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}
