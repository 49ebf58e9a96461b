"""Federation statistics printed by ``fedsim data`` (pure numpy)."""

import numpy as np

from fedsim.data.federated import FederatedData


def federation_summary(data: FederatedData) -> dict:
    """Sizes and label spread of a federation."""
    sizes = data.num_examples
    distinct = (data.label_histogram > 0).sum(axis=1)
    return {
        "clients": int(data.num_clients),
        "train_examples": int(sizes.sum()),
        "test_examples_per_client_mean": float(data.num_test.mean()),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "labels_per_client_mean": float(distinct.mean()),
        "labels_per_client_min": int(distinct.min()),
        "labels_per_client_max": int(distinct.max()),
    }


def label_matrix_text(data: FederatedData, max_rows: int = 20) -> str:
    """The label-by-client count matrix as text (the first ``max_rows`` clients)."""
    hist = data.label_histogram[:max_rows]
    width = max(5, len(str(int(hist.max(initial=0)))) + 1)
    header = "client".rjust(7) + "".join(str(c).rjust(width) for c in range(hist.shape[1]))
    rows = [
        str(i).rjust(7) + "".join(str(int(n)).rjust(width) for n in row)
        for i, row in enumerate(hist)
    ]
    more = data.num_clients - len(hist)
    return "\n".join([header, *rows] + ([f"... {more} more clients"] if more > 0 else []))
