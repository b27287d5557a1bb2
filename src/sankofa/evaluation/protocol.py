"""Which transactions train and which test a model: the handbook's protocols.

A fraud model is used on days after its training data, and the labels of the
last days before deployment are not known yet (they arrive a week later).
Evaluation mimics that (handbook-spec.md section 3): 7 days of training, a
7-day gap whose labels are unknown, then 7 test days. Cards already known to
be compromised would be blocked before scoring, so they leave the test set:
those with a fraud in the training week, and, for each test day, those with a
fraud on the day just before that test day's own 7-day label delay.

Days are whole calendar days of the naive transaction timestamp, numbered as
days since 1970-01-01 (``epoch_day``). Functions return row indices, ascending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import LABEL_DELAY_DAYS

IndexArray = npt.NDArray[np.intp]

#: The single split of the handbook's chapter 3.
SPLIT_TRAIN_START: Final = date(2018, 7, 25)
#: Prequential folds (chapter 5): the latest fold's training start, test and validation.
PREQUENTIAL_TEST_START: Final = date(2018, 8, 15)
PREQUENTIAL_VALIDATION_START: Final = date(2018, 7, 11)
PREQUENTIAL_FOLDS: Final = 4
WEEK_DAYS: Final = 7


@dataclass(frozen=True, slots=True)
class Split:
    """Row indices of one train / delay / test arrangement, with its calendar."""

    train_start: date
    train_days: int
    delay_days: int
    test_days: int
    train: IndexArray
    test: IndexArray

    @property
    def test_start(self) -> date:
        return self.train_start + timedelta(days=self.train_days + self.delay_days)


def epoch_day(d: date) -> int:
    """Days since 1970-01-01, the numbering of ``day`` arrays."""
    return (d - date(1970, 1, 1)).days


def day_of(datetime_s: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Calendar day (days since 1970) of naive timestamps in seconds since 1970."""
    return np.floor_divide(np.asarray(datetime_s, dtype=np.int64), 86_400)


def train_test_split(
    *,
    day: npt.ArrayLike,
    customer: npt.ArrayLike,
    fraud: npt.ArrayLike,
    train_start: date,
    train_days: int = WEEK_DAYS,
    delay_days: int = LABEL_DELAY_DAYS,
    test_days: int = WEEK_DAYS,
) -> Split:
    """Train on ``train_days`` from ``train_start``, test after ``delay_days``.

    Test rows of cards known to be compromised are removed: cards with a fraud
    in the training period, and cumulatively for test day ``d`` (0-based) the
    cards with a fraud on day ``train_start + train_days + d - 1``: the last
    day whose labels are known when test day ``d`` starts.
    """
    if train_days < 1 or test_days < 1 or delay_days < 0:
        raise ValueError("train_days and test_days must be >= 1, delay_days >= 0")
    days = np.asarray(day, dtype=np.int64)
    cust = np.asarray(customer)
    frauds = np.asarray(fraud, dtype=bool)
    if cust.shape != days.shape or frauds.shape != days.shape:
        raise ValueError("day, customer and fraud must have the same shape")
    start = epoch_day(train_start)
    train = np.flatnonzero((days >= start) & (days < start + train_days))
    known = np.unique(cust[train][frauds[train]])
    test_parts: list[IndexArray] = []
    for d in range(test_days):
        label_day = start + train_days + d - 1
        known = np.union1d(known, cust[(days == label_day) & frauds])
        on_day = days == start + train_days + delay_days + d
        test_parts.append(np.flatnonzero(on_day & ~np.isin(cust, known)))
    return Split(
        train_start=train_start,
        train_days=train_days,
        delay_days=delay_days,
        test_days=test_days,
        train=train,
        test=np.concatenate(test_parts),
    )


def single_split(
    *,
    day: npt.ArrayLike,
    customer: npt.ArrayLike,
    fraud: npt.ArrayLike,
    train_start: date = SPLIT_TRAIN_START,
) -> Split:
    """The handbook's chapter-3 split: train 07-25..07-31, test 08-08..08-14 (2018)."""
    return train_test_split(day=day, customer=customer, fraud=fraud, train_start=train_start)


def prequential_folds(
    *,
    day: npt.ArrayLike,
    customer: npt.ArrayLike,
    fraud: npt.ArrayLike,
    start: date = PREQUENTIAL_TEST_START,
    n_folds: int = PREQUENTIAL_FOLDS,
    fold_days: int = WEEK_DAYS,
) -> list[Split]:
    """The handbook's prequential folds, latest first, each one week before the previous.

    With the defaults (test) the folds start training on 2018-08-15, 08-08,
    08-01 and 07-25; pass ``start=PREQUENTIAL_VALIDATION_START`` for the
    validation folds (07-11 back to 06-20).
    """
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    return [
        train_test_split(
            day=day,
            customer=customer,
            fraud=fraud,
            train_start=start - timedelta(days=i * fold_days),
            train_days=fold_days,
            test_days=fold_days,
        )
        for i in range(n_folds)
    ]
