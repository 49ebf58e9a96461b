"""A config's federation: the dataset loaded, subsampled, partitioned over clients and checked.

Reads the data keys of an experiment config (``dataset``, ``partition``, ``num_clients``, the
partitioners' parameters and ``feature_shift``; see ``fedsim.config.base_config``) and returns a ``FederatedData``.
"""

from fedsim.data import datasets, shakespeare, validate
from fedsim.data.feature_shift import shift_features
from fedsim.data.federated import FederatedData, make_federation
from fedsim.errors import ConfigError

NATURAL = ("shakespeare",)  # datasets with their own clients (``partition='natural'``)


def federation_from_config(config, data_seed: int) -> FederatedData:
    """The checked federation of ``config``'s data keys, drawn with ``data_seed``. A dataset with its
    own clients under another partition (e.g. ``iid`` over one client: central training) pools every
    client's windows first."""
    if config.partition == "natural":
        return _natural_federation(config, data_seed)
    if config.dataset in NATURAL:
        dataset = _shakespeare(config, num_clients=0, data_seed=data_seed).to_array_dataset()
    else:
        dataset = datasets.load_dataset(
            config.dataset, seed=data_seed, path=config.data_path, data_dir=config.data_dir
        )
    dataset = datasets.subsample_train(dataset, config.train_examples, data_seed)
    validate.check_labels(dataset)
    if config.num_clients > len(dataset.y_train):
        raise ConfigError(
            f"num_clients={config.num_clients} exceeds the {len(dataset.y_train)} training "
            f"examples of dataset {config.dataset!r}"
        )
    data = make_federation(
        dataset,
        config.partition,
        config.num_clients,
        data_seed,
        alpha=config.alpha,
        min_size=config.min_client_size,
        shards_per_client=config.shards_per_client,
        labels_per_client=config.labels_per_client,
        beta=config.beta,
        num_classes=dataset.num_classes,
    )
    if config.feature_shift:
        data = shift_features(data, tuple(config.feature_shift_transforms.split(",")))
    validate.check_federation(data)
    return data


def _natural_federation(config, data_seed: int) -> FederatedData:
    """Datasets with their own clients (Shakespeare roles) keep them: ``partition='natural'``."""
    if config.dataset not in NATURAL:
        raise ConfigError(
            f"dataset={config.dataset!r} with partition='natural': the natural partition needs a "
            f"dataset with its own clients ({', '.join(NATURAL)})"
        )
    source = _shakespeare(config, config.num_clients, data_seed)
    validate.check_labels(source.to_array_dataset())
    data = source.federated()
    validate.check_federation(data)
    return data


def _shakespeare(config, num_clients: int, data_seed: int) -> shakespeare.ShakespeareData:
    """The Shakespeare roles (``num_clients`` of them, 0 for all) at ``max_windows_per_client``."""
    return shakespeare.load_shakespeare(
        num_clients=num_clients,
        seed=data_seed,
        max_windows_per_client=config.max_windows_per_client or None,
    )
