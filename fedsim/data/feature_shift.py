"""Feature-shift federations: every client's images carry a fixed, client-specific transform.

FedBN (Li et al., ICLR 2021) motivates local BatchNorm with clients whose inputs differ in
distribution (scanners, styles), not only in labels. ``shift_features`` builds such a federation
from any image federation. A domain combines up to three transforms: a rotation by a multiple of 90
degrees (4 levels), inversion (``1 - x``, 2 levels) and half contrast around mid-grey
(``0.25 + x / 2``, 2 levels). Client ``c``'s domain is ``c`` written in that mixed radix over the
transforms in use, so with all three (the default) client ``c`` is rotated ``90 * (c mod 4)``
degrees, inverted when ``c // 4`` is odd and at half contrast when ``c // 8`` is odd: 16 clients
hold 16 domains. With ``("invert", "contrast")`` there are 4 domains, shared by clients ``c``,
``c + 4``, ``c + 8``, ...; these are shifts a per-channel BatchNorm can undo, unlike a rotation.
Each client gets its own transformed copies, so the pooled arrays are rebuilt client by client; the
pooled test set (global accuracy) is the union of the clients' transformed test splits.
"""

import dataclasses

import numpy as np

from fedsim.data.federated import FederatedData, _padded
from fedsim.errors import ConfigError

TRANSFORMS = {"rotate": 4, "invert": 2, "contrast": 2}  # name: levels, in radix order


def client_domain(client: int, transforms=tuple(TRANSFORMS)) -> tuple[int, bool, bool]:
    """Client ``client``'s transform (quarter turns, inverted, half contrast) when domains combine
    ``transforms``; a transform not in use stays at level 0."""
    levels = {}
    for name, count in TRANSFORMS.items():
        levels[name], client = (
            (client % count, client // count) if name in transforms else (0, client)
        )
    return levels["rotate"], levels["invert"] == 1, levels["contrast"] == 1


def check_transforms(transforms: tuple[str, ...]) -> None:
    """``ConfigError`` unless ``transforms`` is a non-empty set of names in ``TRANSFORMS``."""
    unknown = set(transforms) - set(TRANSFORMS)
    if unknown or not transforms or len(set(transforms)) < len(transforms):
        raise ConfigError(
            f"feature_shift_transforms={','.join(transforms)!r}: accepted is a comma list of "
            f"distinct names from {', '.join(TRANSFORMS)}"
        )


def transform_images(images: np.ndarray, client: int, transforms=tuple(TRANSFORMS)) -> np.ndarray:
    """``images [n, H, H, C]`` in [0, 1] under ``client``'s transform (``client_domain``)."""
    quarter_turns, inverted, half_contrast = client_domain(client, transforms)
    out = np.rot90(images, k=quarter_turns, axes=(1, 2))
    if inverted:
        out = 1.0 - out
    if half_contrast:
        out = 0.25 + 0.5 * out
    return np.ascontiguousarray(out, dtype=np.float32)


def _per_client_copies(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, counts: np.ndarray, transforms
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled transformed copies of each client's rows, their labels, and the new index table."""
    rows = [indices[c, : counts[c]] for c in range(len(counts))]
    x = np.concatenate([transform_images(images[r], c, transforms) for c, r in enumerate(rows)])
    y = np.concatenate([labels[r] for r in rows])
    return x, y.astype(np.int32), _padded(np.arange(len(y)), counts)


def shift_features(data: FederatedData, transforms=tuple(TRANSFORMS)) -> FederatedData:
    """``data`` with every client's training and test images under its domain's transform.

    Run before the validation split (``hold_out_validation`` then splits the copies)."""
    check_transforms(transforms)
    if data.x_train.ndim != 4 or data.x_train.shape[1] != data.x_train.shape[2]:
        raise ConfigError(
            f"feature_shift=True needs square images [N, H, H, C]; dataset {data.name!r} has "
            f"shape {data.x_train.shape[1:]}"
        )
    x_train, y_train, train_table = _per_client_copies(
        data.x_train, data.y_train, data.client_indices, data.num_examples, transforms
    )
    x_test, y_test, test_table = _per_client_copies(
        data.x_test, data.y_test, data.client_test_indices, data.num_test, transforms
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
