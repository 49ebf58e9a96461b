"""Feature-shift federations: every client's images carry a fixed, client-specific transform.

FedBN (Li et al., ICLR 2021) motivates local BatchNorm with clients whose inputs differ in
distribution (scanners, styles), not only in labels. ``shift_features`` builds such a federation
from any image federation: client ``c`` sees its own training and test images rotated by
``90 * (c mod 4)`` degrees, inverted (``1 - x``) when ``c // 4`` is odd, and at half contrast
around mid-grey (``0.25 + x / 2``) when ``c // 8`` is odd, so 16 clients hold 16 distinct domains.
Each client gets its own transformed copies, so the pooled arrays are rebuilt client by client; the
pooled test set (global accuracy) is the union of the clients' transformed test splits.
"""

import dataclasses

import numpy as np

from fedsim.data.federated import FederatedData, _padded
from fedsim.errors import ConfigError


def client_domain(client: int) -> tuple[int, bool, bool]:
    """Client ``client``'s transform: (quarter turns, inverted, half contrast)."""
    return client % 4, (client // 4) % 2 == 1, (client // 8) % 2 == 1


def transform_images(images: np.ndarray, client: int) -> np.ndarray:
    """``images [n, H, H, C]`` in [0, 1] under ``client``'s transform (``client_domain``)."""
    quarter_turns, inverted, half_contrast = client_domain(client)
    out = np.rot90(images, k=quarter_turns, axes=(1, 2))
    if inverted:
        out = 1.0 - out
    if half_contrast:
        out = 0.25 + 0.5 * out
    return np.ascontiguousarray(out, dtype=np.float32)


def _per_client_copies(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled transformed copies of each client's rows, their labels, and the new index table."""
    rows = [indices[c, : counts[c]] for c in range(len(counts))]
    x = np.concatenate([transform_images(images[r], c) for c, r in enumerate(rows)])
    y = np.concatenate([labels[r] for r in rows])
    return x, y.astype(np.int32), _padded(np.arange(len(y)), counts)


def shift_features(data: FederatedData) -> FederatedData:
    """``data`` with every client's training and test images under its own transform.

    Run before the validation split (``hold_out_validation`` then splits the copies)."""
    if data.x_train.ndim != 4 or data.x_train.shape[1] != data.x_train.shape[2]:
        raise ConfigError(
            f"feature_shift=True needs square images [N, H, H, C]; dataset {data.name!r} has "
            f"shape {data.x_train.shape[1:]}"
        )
    x_train, y_train, train_table = _per_client_copies(
        data.x_train, data.y_train, data.client_indices, data.num_examples
    )
    x_test, y_test, test_table = _per_client_copies(
        data.x_test, data.y_test, data.client_test_indices, data.num_test
    )
    return dataclasses.replace(
        data,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        client_indices=train_table,
        client_test_indices=test_table,
    )
