"""The FedLTN grid (configs/fedltn.py) runs on CIFAR-10 read through TFDS when the data is present.

No CIFAR-10 download here: ``tfds.testing.mock_data`` stands in for the prepared dataset, serving
deterministic random 32x32x3 images and labels through ``tfds.data_source`` (which is how
``fedsim.data.tfds_source.load_tfds`` reads it), so the network check is never reached.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fedsim.config import load_config
from fedsim.data.tfds_source import load_tfds
from fedsim.engine import loop, setup

# 4 clients with two labels each cannot hold all ten classes; the partitioner says so every time
pytestmark = pytest.mark.filterwarnings("ignore:label_quantity. no client holds labels:UserWarning")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fedltn.py"
NUM_EXAMPLES = 120  # per split; mock train and test hold the same examples
# smoke first (it sets dataset=digits), then the CIFAR-10 overrides: 4 clients, all in every round
ARG = (
    "smoke,dataset=cifar10,train_examples=0,num_clients=4,clients_per_round=4,rounds=2,"
    "eval_every=1,local_epochs=1,labels_per_client=2,batch_size=8"
)


@pytest.fixture
def mock_cifar10():
    """TFDS mock data for the test's duration; ``load_tfds``'s cache is kept free of it."""
    load_tfds.cache_clear()
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        yield
    load_tfds.cache_clear()


def _config(algorithm: str, seed: int = 0):
    return load_config(f"{CONFIG}:algorithm={algorithm},seed={seed},{ARG}")


def test_every_grid_cell_builds_on_cifar10(mock_cifar10):
    """Each (algorithm, seed) cell of ``get_sweep`` builds its CIFAR-10 run (nothing compiled)."""
    import runpy

    module = runpy.run_path(str(CONFIG))
    cells = module["get_sweep"]()
    assert {c["algorithm"] for c in cells} == set(module["METHODS"])
    for cell in cells:
        config = _config(cell["algorithm"], cell["seed"])
        assert (config.dataset, config.model, config.algorithm) == (
            "cifar10",
            "bn_cnn",
            cell["algorithm"],
        )
        experiment = setup.build_experiment(config)
        assert experiment.data.x_train.shape[1:] == (32, 32, 3)
        assert experiment.data.num_classes == 10
    algorithm = setup.programs(experiment).algorithm  # the last cell's model accepts 32x32x3
    server_state, _ = setup.init_states(experiment, algorithm)
    assert server_state.model is not None


@pytest.mark.parametrize("algorithm", ["fedavg", "fedltn"])
def test_fedltn_grid_runs_on_mock_cifar10(mock_cifar10, algorithm):
    config = _config(algorithm)
    assert dict(config.model_kwargs) == {"width": 4}
    assert (config.fedltn.prune_threshold, config.fedltn.target_density) == (0.0, 0.5)
    experiment = setup.build_experiment(config)
    data = experiment.data
    assert data.name == "cifar10"
    assert data.x_train.shape[1:] == (32, 32, 3) and data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert (data.label_histogram > 0).sum(axis=1).max() <= 2  # '#C=2'

    history = [r.metrics for r in loop.run(experiment) if r.metrics]
    assert [m["round"] for m in history] == [1, 2]
    last = history[-1]
    keys = (
        "personal_acc_mean",
        "personal_acc_worst10",
        "global_acc",
        "up_mb",
        "down_mb",
        "model_mb",
        "model_mb_values",
        "density",
    )
    assert all(math.isfinite(last[k]) for k in keys), {k: last[k] for k in keys}
    assert 0.0 <= last["personal_acc_worst10"] <= last["personal_acc_mean"] <= 1.0
    assert last["up_mb"] > history[0]["up_mb"] > 0 and last["down_mb"] > 0
    if (
        algorithm == "fedltn"
    ):  # random mock labels: the gate (above the majority rate) may stay shut
        assert config.fedltn.target_density <= last["density"] <= 1.0
    else:
        assert last["density"] == 1.0
