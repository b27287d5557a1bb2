"""Decision thresholds from one stated policy: investigators' capacity in cards per day.

Investigators review about ``REVIEW_CARDS_PER_DAY`` cards a day (100, the k
of Card Precision@100), so the review threshold is the score that, over the
days it is chosen on, flags that many distinct cards per day on average (a
card counts with its highest score of the day). Automatic declines are kept
to the few cards the model is surest of (``DECLINE_CARDS_PER_DAY``), since a
decline blocks a customer's money without a human look. The MEDIUM risk
level uses the same rule with a larger budget (``MEDIUM_CARDS_PER_DAY``);
HIGH starts at review and CRITICAL at decline.

Which days: the logistic regression's thresholds come from its training
days, as before; the tree ensemble's from the held-out calibration week,
since trees score their own training rows too confidently.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.model import Thresholds

DECLINE_CARDS_PER_DAY: Final = 20
REVIEW_CARDS_PER_DAY: Final = 100
MEDIUM_CARDS_PER_DAY: Final = 500


def choose_thresholds(
    scores: npt.ArrayLike, day: npt.ArrayLike, customer: npt.ArrayLike
) -> Thresholds:
    """Thresholds from card budgets per day on the given rows (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    days = np.asarray(day, dtype=np.int64)
    cust = np.asarray(customer, dtype=np.int64)
    n_days = np.unique(days).shape[0]
    # Highest score of each (day, card): one entry per card and day.
    key = (days - days.min()) * (int(cust.max()) + 1) + cust
    order = np.lexsort((s, key))
    last = np.r_[key[order][1:] != key[order][:-1], True]
    card_day_max = np.sort(s[order][last])[::-1]

    def budget(cards_per_day: int) -> float:
        k = min(cards_per_day * n_days, card_day_max.shape[0])
        return float(card_day_max[k - 1])

    decline = budget(DECLINE_CARDS_PER_DAY)
    review = budget(REVIEW_CARDS_PER_DAY)
    medium = budget(MEDIUM_CARDS_PER_DAY)
    return Thresholds(
        review=review,
        decline=decline,
        risk_levels={"MEDIUM": medium, "HIGH": review, "CRITICAL": decline},
    )


def policy_metadata(chosen_on: str) -> dict[str, object]:
    """How the thresholds were chosen, for the artefact's metadata."""
    return {
        "rule": "score flagging on average N distinct cards per day",
        "chosen_on": chosen_on,
        "decline_cards_per_day": DECLINE_CARDS_PER_DAY,
        "review_cards_per_day": REVIEW_CARDS_PER_DAY,
        "medium_cards_per_day": MEDIUM_CARDS_PER_DAY,
    }
