"""Count-table floors (``fedsim.metrics.floors``) on the very windows a config trains and tests on.

    python results/count_floors.py configs/maestro.py:mode=shakespeare_central configs/shakespeare.py

Prints one JSON line per config: its spec, the number of train and test windows, and the unigram,
bigram and trigram accuracies over every next-character position of the test windows (``*_acc``,
what a sequence model's ``global_acc`` is compared with) and at their last position (``*_last_acc``,
what a window-level model such as ``char_lstm`` is compared with).
"""

import json
import sys

from fedsim import config as config_lib
from fedsim.engine.setup import load_federation
from fedsim.metrics.floors import count_table_floors


def floors(spec: str) -> dict:
    data = load_federation(config_lib.load_config(spec))
    return {
        "config": spec,
        "train_windows": len(data.x_train),
        "test_windows": len(data.x_test),
        **count_table_floors(
            data.x_train, data.y_train, data.x_test, data.y_test, data.num_classes
        ),
    }


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        print(json.dumps(floors(spec)), flush=True)
