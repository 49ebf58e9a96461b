"""Count-table floors (unigram, bigram, trigram) on a toy text with hand-computed accuracies."""

import numpy as np
import pytest

from fedsim.metrics.floors import count_table_floors

A, B, C = 0, 1, 2


def test_count_tables_back_off_and_match_hand_counts():
    # train sequences (window + label): abc abc cba bab
    #   unigram: b (5 of 12); bigram: a->b, b->a (tie a/c, smallest id), c->b;
    #   trigram: ab->c, cb->a, ba->b
    x_train, y_train = np.array([[A, B], [A, B], [C, B], [B, A]]), np.array([C, C, A, B])
    # test sequences: a b c | b  (targets b c b) and c c b | a  (targets c b a)
    #   unigram  b b b | b b b: 2/3 and 1/3 right; last: b right, a wrong
    #   bigram   b a b | b b a: 2/3 and 2/3; both last right
    #   trigram  b c b | b b a (first position backs off to the bigram, unseen bc and cc too):
    #            3/3 and 2/3; both last right
    x_test, y_test = np.array([[A, B, C], [C, C, B]]), np.array([B, A])
    floors = count_table_floors(x_train, y_train, x_test, y_test, num_classes=3)
    expected = {
        "unigram_acc": 3 / 6, "unigram_last_acc": 1 / 2,
        "bigram_acc": 4 / 6, "bigram_last_acc": 1.0,
        "trigram_acc": 5 / 6, "trigram_last_acc": 1.0,
    }  # fmt: skip
    assert floors == pytest.approx(expected)
