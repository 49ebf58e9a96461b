"""Count-table floors for next-token prediction: the accuracy of predicting the most frequent next
token given the previous ``k`` tokens (``k = 0, 1, 2``: unigram, bigram, trigram), fitted on the
training windows and scored on the test windows. A language model below the bigram table has not
learned the task (the Shakespeare windows of Caldas et al. 2018, LEAF).

Host-side numpy. A window ``x [T]`` with label ``y`` is the sequence ``s = x ++ [y]``; its targets are
``s[1:]`` (``fedsim.data.sequence``), the ones a causal model is scored on. A table of order ``k``
predicts ``s[t]`` from ``s[t-k:t]``; where fewer than ``k`` tokens precede ``t``, or the context never
occurs in training, it backs off to the highest order that has one. Ties go to the smallest token id.
"""

import numpy as np

ORDER_NAMES = ("unigram", "bigram", "trigram")


def _sequences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[N, T + 1]`` int64: each window followed by its label."""
    return np.concatenate([x, y[:, None]], axis=1).astype(np.int64)


def _context_codes(sequences: np.ndarray, order: int, t: int, num_classes: int) -> np.ndarray:
    """Every row's code of the context ``sequences[:, t-order:t]``, base ``num_classes``."""
    codes = np.zeros(len(sequences), np.int64)
    for column in range(t - order, t):
        codes = codes * num_classes + sequences[:, column]
    return codes


def fit_table(sequences: np.ndarray, order: int, num_classes: int) -> np.ndarray:
    """``[num_classes ** order]``: the most frequent next token after each context of ``order``
    tokens, counted over every position of ``sequences``; -1 for a context never seen."""
    counts = np.zeros((num_classes**order, num_classes), np.int64)
    for t in range(order, sequences.shape[1]):
        code = _context_codes(sequences, order, t, num_classes) * num_classes + sequences[:, t]
        counts += np.bincount(code, minlength=counts.size).reshape(counts.shape)
    return np.where(counts.any(axis=1), counts.argmax(axis=1), -1)


def predict(tables: list[np.ndarray], sequences: np.ndarray, num_classes: int) -> np.ndarray:
    """``[N, T]`` predictions of ``sequences[:, 1:]`` by ``tables`` (orders ``0..K``), backing off."""
    out = np.empty((len(sequences), sequences.shape[1] - 1), np.int64)
    for t in range(1, sequences.shape[1]):
        guess = np.full(len(sequences), -1, np.int64)
        for order in range(min(len(tables) - 1, t), -1, -1):
            found = tables[order][_context_codes(sequences, order, t, num_classes)]
            guess = np.where(guess < 0, found, guess)
        out[:, t - 1] = guess
    return out


def count_table_floors(x_train, y_train, x_test, y_test, num_classes: int) -> dict:
    """``{name}_acc`` over every next-token position of the test windows and ``{name}_last_acc`` at
    their last position (the window's label), for the unigram, bigram and trigram tables. Tokens
    (inputs and labels) are ids in ``[0, num_classes)``."""
    train, test = _sequences(x_train, y_train), _sequences(x_test, y_test)
    tables, out = [], {}
    for order, name in enumerate(ORDER_NAMES):
        tables.append(fit_table(train, order, num_classes))
        correct = predict(tables, test, num_classes) == test[:, 1:]
        out[f"{name}_acc"] = float(correct.mean())
        out[f"{name}_last_acc"] = float(correct[:, -1].mean())
    return out
