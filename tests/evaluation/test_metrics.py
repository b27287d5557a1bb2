"""Metrics against hand-computed values and against scikit-learn's outputs.

The scikit-learn references were produced once with scikit-learn 1.9.1
(``roc_auc_score`` / ``average_precision_score`` on the inputs below) and are
hard-coded: tests must not import scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pytest

from sankofa.evaluation.metrics import average_precision, card_precision_top_k, roc_auc

# (y, s, sklearn roc_auc_score, sklearn average_precision_score); scores rounded to
# one decimal so that many of them tie.
SKLEARN_CASES = [
    (
        [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0],
        [0.6, 0.1, 0.3, 0.5, 0.4, 0.3, 0.1, 0.3, 0.3, 0.3, 0.2, 0.5,
         0.5, 0.5, 0.4, 0.2, 0.5, 0.2, 0.4, 0.6, 0.3, 0.4, 0.6, 0.5],
        0.78515625,
        0.6768443544759335,
    ),
    (
        [1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0],
        [0.6, 0.4, 0.1, 0.4, 0.4, 0.2, 0.7, 0.6, 0.7, 0.4, 0.5, 0.5,
         0.0, 0.3, 0.3, 0.0, 0.3, 0.4, 0.5, 0.6, 0.3, 0.1, 0.4, 0.1],
        0.73828125,
        0.6583855472013367,
    ),
    (
        [0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [0.0, 0.3, 0.3, 0.1, 0.9, 0.2, 0.7, 0.0, 0.2, 0.3, 0.4, 0.7,
         0.3, 0.2, 0.4, 0.4, 0.4, 0.2, 0.2, 0.1, 0.6, 0.5, 0.1, 0.2],
        0.8296296296296295,
        0.7449392712550607,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("y", "s", "auc", "ap"), SKLEARN_CASES)
def test_matches_scikit_learn_outputs(y: list[int], s: list[float], auc: float, ap: float) -> None:
    assert roc_auc(y, s) == pytest.approx(auc, abs=1e-15)
    assert average_precision(y, s) == pytest.approx(ap, abs=1e-15)


def test_distinct_scores_by_hand() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # 3 of the 4 (positive, negative) pairs are ordered correctly.
    assert roc_auc(y, s) == pytest.approx(0.75)
    # Thresholds 0.8 (recall 1/2, precision 1) and 0.35 (recall 1, precision 2/3).
    assert average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_tied_scores_count_half_and_form_one_step() -> None:
    y = [1, 0, 1, 0]
    s = [0.5, 0.5, 0.9, 0.1]
    # Pairs: (0.9 vs 0.5) 1, (0.9 vs 0.1) 1, (0.5 vs 0.5) 1/2, (0.5 vs 0.1) 1 -> 3.5 / 4.
    assert roc_auc(y, s) == pytest.approx(0.875)
    # The tie is one threshold: recall 1/2 -> 1 at precision 2/3, not two steps.
    assert average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_perfect_and_reversed_and_constant_scores() -> None:
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.7])
    assert roc_auc(y, s) == 1.0
    assert average_precision(y, s) == 1.0
    assert roc_auc(y, -s) == 0.0
    assert roc_auc(y, np.zeros(5)) == 0.5
    assert average_precision(y, np.zeros(5)) == pytest.approx(3 / 5)


def test_bool_labels_are_accepted() -> None:
    assert roc_auc(np.array([False, True]), np.array([0.2, 0.3])) == 1.0


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]])
def test_auc_needs_both_classes(y: list[int]) -> None:
    with pytest.raises(ValueError, match="both"):
        roc_auc(y, [0.1, 0.2, 0.3])


def test_average_precision_needs_a_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        average_precision([0, 0], [0.1, 0.2])


@pytest.mark.parametrize(
    ("y", "s"),
    [([0, 1], [0.1, float("nan")]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1]), ([], [])],
)
def test_rejects_bad_input(y: list[int], s: list[float]) -> None:
    with pytest.raises(ValueError):
        roc_auc(y, s)


def test_card_precision_by_hand() -> None:
    # Day 0: cards 1..4; card 1 has a fraud but its best score is on a genuine one.
    # Day 1: card 2 was detected on day 0 and is left out.
    day = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    customer = [1, 1, 2, 3, 4, 2, 3, 4, 5]
    y = [1, 0, 1, 0, 0, 1, 1, 0, 1]
    s = [0.2, 0.95, 0.9, 0.8, 0.1, 0.99, 0.3, 0.7, 0.6]
    mean, per_day = card_precision_top_k(day, customer, y, s, k=2)
    # Day 0 cards by max score: 1 (0.95, fraud), 2 (0.9, fraud), 3, 4 -> top 2 both fraud.
    # Day 1 without 1 and 2: 4 (0.7), 5 (0.6, fraud), 3 (0.3, fraud) -> 1 of 2.
    assert per_day == [1.0, 0.5]
    assert mean == 0.75


def test_card_precision_divides_by_k_even_with_fewer_cards() -> None:
    mean, per_day = card_precision_top_k([3, 3], [7, 8], [1, 0], [0.5, 0.4], k=100)
    assert per_day == [0.01]
    assert mean == 0.01


def test_card_precision_detected_cards_stay_out_for_all_later_days() -> None:
    day = [0, 1, 2]
    customer = [9, 9, 9]
    y = [1, 1, 1]
    s = [0.9, 0.9, 0.9]
    assert card_precision_top_k(day, customer, y, s, k=1) == (1 / 3, [1.0, 0.0, 0.0])


def test_card_precision_undetected_fraud_card_stays_in() -> None:
    # Card 9 is fraudulent on day 0 but outside the top 1, so day 1 still counts it.
    day = [0, 0, 1]
    customer = [9, 5, 9]
    y = [1, 1, 1]
    s = [0.1, 0.9, 0.9]
    assert card_precision_top_k(day, customer, y, s, k=1)[1] == [1.0, 1.0]


def test_card_precision_ties_go_to_lower_customer_id() -> None:
    _, per_day = card_precision_top_k([0, 0], [2, 1], [1, 0], [0.5, 0.5], k=1)
    assert per_day == [0.0]
