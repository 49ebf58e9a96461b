"""pfl-research's FedAvg rounds on fedsim's federation, timed on request (``--suite pfl``).

Run as ``PYTHON pfl_worker.py DATA_DIR SETTINGS_JSON`` by an interpreter with ``pfl`` and ``torch``
(``pip install 'fedsim[peers]'`` or a separate environment). ``DATA_DIR`` holds ``x.npy``,
``y.npy``, ``client_indices.npy`` and ``num_examples.npy`` (the same pooled examples and client
tables fedsim trains on); ``SETTINGS_JSON`` has ``clients_per_round``, ``local_epochs``,
``batch_size``, ``client_lr``, ``server_lr`` and ``seed``. The worker builds pfl-research's CIFAR-10
benchmark (``benchmarks/image_classification`` of github.com/apple/pfl-research: its PyTorch
``simple_cnn``, local SGD, a server SGD on the averaged update, no federated evaluation), runs one
warm-up round, prints ``READY {json}`` and then answers each stdin line ``ROUNDS n`` by running
``n`` more rounds and printing ``SECONDS s``; ``QUIT`` (or end of input) stops it.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pfl
import torch
from pfl.aggregate.simulate import SimulatedBackend
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.data.sampling import get_user_sampler
from pfl.hyperparam import NNTrainHyperParams
from pfl.metrics import Weighted
from pfl.model.pytorch import PyTorchModel


class SimpleCNN(torch.nn.Module):
    """pfl-research's ``simple_cnn`` (``benchmarks/model/pytorch/cnn.py``) on NHWC images, with the
    ``loss``/``metrics`` methods ``PyTorchModel`` calls."""

    def __init__(self, image_shape, num_classes):
        super().__init__()
        height, _, channels = image_shape
        flat = ((height - 4) // 2) ** 2 * 64
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 32, 3), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Dropout(0.25), torch.nn.Flatten(),
            torch.nn.Linear(flat, 128), torch.nn.ReLU(), torch.nn.Dropout(0.5),
            torch.nn.Linear(128, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return torch.nn.functional.cross_entropy(self(x), y.long())

    def metrics(self, x, y, eval=True):
        self.eval() if eval else self.train()
        logits = self(x)
        loss = torch.nn.functional.cross_entropy(logits, y.long(), reduction="sum")
        correct = (logits.argmax(-1) == y).sum()
        return {"loss": Weighted(loss, len(y)), "accuracy": Weighted(correct, len(y))}


def federation(data_dir: Path) -> tuple[FederatedDataset, tuple, int]:
    """The clients of ``data_dir`` as a pfl ``FederatedDataset`` (uniform sampling, as fedsim's
    IID benchmark), the image shape and the number of classes."""
    x = np.load(data_dir / "x.npy", mmap_mode="r")
    y = np.load(data_dir / "y.npy")
    indices, sizes = (
        np.load(data_dir / "client_indices.npy"),
        np.load(data_dir / "num_examples.npy"),
    )

    def make_dataset(user_id):
        rows = indices[user_id, : sizes[user_id]]
        return Dataset((np.asarray(x[rows]), y[rows].astype(np.int64)), user_id=str(user_id))

    sampler = get_user_sampler("random", list(range(len(sizes))))
    return FederatedDataset(make_dataset, sampler), x.shape[1:], int(y.max()) + 1


class Rounds:
    """pfl's FedAvg run loop, advanced ``n`` central iterations a call."""

    def __init__(self, data_dir: Path, settings: dict):
        torch.manual_seed(settings["seed"])
        train, image_shape, num_classes = federation(data_dir)
        network = SimpleCNN(image_shape, num_classes)
        self.model = PyTorchModel(
            network,
            local_optimizer_create=torch.optim.SGD,
            central_optimizer=torch.optim.SGD(network.parameters(), lr=settings["server_lr"]),
        )
        self.backend = SimulatedBackend(training_data=train, val_data=None)
        self.algorithm = FederatedAveraging()
        self.train_params = NNTrainHyperParams(
            local_learning_rate=settings["client_lr"],
            local_num_epochs=settings["local_epochs"],
            local_batch_size=settings["batch_size"],
        )
        self.cohort = settings["clients_per_round"]
        self.done = 0

    def run(self, rounds: int) -> float:
        """Seconds ``rounds`` more rounds take."""
        params = NNAlgorithmParams(
            central_num_iterations=self.done + rounds,
            evaluation_frequency=self.done + rounds + 1,
            train_cohort_size=self.cohort,
            val_cohort_size=0,
        )
        t = time.perf_counter()
        self.model = self.algorithm.run(
            params, self.backend, self.model, self.train_params, send_metrics_to_platform=False
        )
        self.done += rounds
        return time.perf_counter() - t


def main(data_dir: str, settings_json: str) -> None:
    t = time.perf_counter()
    rounds = Rounds(Path(data_dir), json.loads(settings_json))
    warmup_s = rounds.run(1)
    info = {"pfl": pfl.__version__, "torch": torch.__version__, "threads": torch.get_num_threads()}
    info.update(setup_s=time.perf_counter() - t - warmup_s, warmup_round_s=warmup_s)
    print("READY", json.dumps(info), flush=True)
    for line in sys.stdin:
        command, *count = line.split()
        if command == "QUIT":
            break
        print("SECONDS", rounds.run(int(count[0])), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
