"""Feature-shift federations: each client's images under its own fixed transform."""

import dataclasses

import numpy as np
import pytest

from fedsim.cli import main
from fedsim.config import base_config
from fedsim.data.assemble import federation_from_config
from fedsim.data.datasets import load_dataset
from fedsim.data.feature_shift import client_domain, shift_features, transform_images
from fedsim.data.federated import hold_out_validation, make_federation
from fedsim.errors import ConfigError


@pytest.fixture(scope="module")
def federation():
    return make_federation(load_dataset("digits"), "dirichlet", 16, seed=0, alpha=1.0)


def test_sixteen_clients_hold_sixteen_domains():
    assert len({client_domain(c) for c in range(16)}) == 16
    assert client_domain(0) == (0, False, False)
    assert client_domain(13) == (1, True, True)


def test_transforms_are_rotation_inversion_and_contrast():
    x = np.random.default_rng(0).random((3, 5, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(transform_images(x, 0), x)
    np.testing.assert_array_equal(transform_images(x, 2), x[:, ::-1, ::-1])
    np.testing.assert_allclose(transform_images(x, 4), 1.0 - x)
    np.testing.assert_allclose(transform_images(x, 8), 0.25 + 0.5 * x)
    np.testing.assert_allclose(transform_images(x, 13), 0.25 + 0.5 * (1.0 - np.rot90(x, 1, (1, 2))))


def test_each_client_sees_its_own_transformed_copies(federation):
    shifted = shift_features(federation)
    np.testing.assert_array_equal(shifted.num_examples, federation.num_examples)
    np.testing.assert_array_equal(shifted.num_test, federation.num_test)
    np.testing.assert_array_equal(shifted.label_histogram, federation.label_histogram)
    for c in (0, 5, 11):
        x, y = shifted.client_arrays(c)
        x0, y0 = federation.client_arrays(c)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_allclose(x, transform_images(x0, c))
        rows = shifted.client_test_indices[c, : shifted.num_test[c]]
        rows0 = federation.client_test_indices[c, : federation.num_test[c]]
        np.testing.assert_array_equal(shifted.y_test[rows], federation.y_test[rows0])
        np.testing.assert_allclose(
            shifted.x_test[rows], transform_images(federation.x_test[rows0], c)
        )
    assert len(shifted.y_test) == federation.num_test.sum()


def test_validation_split_keeps_the_clients_copies(federation):
    data = hold_out_validation(shift_features(federation), 0.1, seed=0)
    for c in (3, 12):
        own = set(
            range(
                int(federation.num_examples[:c].sum()), int(federation.num_examples[: c + 1].sum())
            )
        )
        val = data.client_val_indices[c, : data.num_val[c]]
        train = data.client_indices[c, : data.num_examples[c]]
        assert set(val) | set(train) == own


def test_config_key_shifts_the_federation():
    config = base_config()
    config.update(dataset="digits", num_clients=16, alpha=1.0, feature_shift=True)
    shifted = federation_from_config(config, 0)
    x, _ = shifted.client_arrays(4)
    assert x.mean() > 0.5  # inverted: mostly bright background


def test_non_square_images_are_refused(federation):
    flat = dataclasses.replace(federation, x_train=federation.x_train[:, :, :4])
    with pytest.raises(ConfigError, match="feature_shift=True needs square images"):
        shift_features(flat)


def test_default_domains_follow_the_mixed_radix_of_all_three_transforms():
    for c in range(40):
        assert client_domain(c) == (c % 4, (c // 4) % 2 == 1, (c // 8) % 2 == 1)


def test_intensity_only_domains_are_four_each_shared_by_every_fourth_client():
    intensity = ("invert", "contrast")
    domains = [client_domain(c, intensity) for c in range(16)]
    assert set(domains) == {(0, i, h) for i in (False, True) for h in (False, True)}
    assert all(domains[c] == domains[c % 4] for c in range(16))
    x = np.random.default_rng(0).random((2, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(transform_images(x, 7, intensity), 0.25 + 0.5 * (1.0 - x))


@pytest.mark.parametrize("transforms", ["rotate,blur", "", "invert,invert"])
def test_unknown_or_repeated_transforms_are_refused(federation, transforms):
    with pytest.raises(ConfigError, match="feature_shift_transforms=.*accepted"):
        shift_features(federation, tuple(transforms.split(",")) if transforms else ())


def test_cli_refuses_unknown_transforms_with_one_line_and_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "run"
    flags = ["--config.feature_shift=True", "--config.feature_shift_transforms=rotate,blur"]
    assert (
        main(["run", "--config", "configs/quickstart.py:smoke", *flags, "--workdir", str(workdir)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rotate,blur" in err
    assert not workdir.exists()
