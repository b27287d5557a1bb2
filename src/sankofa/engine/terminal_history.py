"""The terminal's known-label history: three features the handbook's ratios blur.

A compromised terminal (the handbook's fraud scenario 2) turns every payment
on it into fraud for 28 days, and the service learns it only as labels arrive,
a week late. The handbook's terminal features are fraud ratios over fixed
windows: the first known frauds of a compromise look like one chance fraud
among a week of legitimate payments, and a compromise that has just ended
still looks compromised for a week or more. What tells them apart is the
*order* of the known labels: a run of frauds at the end of the known history,
how long ago that run began, and how long ago the terminal last had a
legitimate payment.

Definition, for a transaction at time ``t``. Its terminal's *known records*
are those with time in ``(t - reach, t - delay]``, ``delay`` the label delay
and ``reach`` = delay + the longest terminal window (37 days): the same
records as ``TERMINAL_ID_NB_TX_30DAY_WINDOW``, with their labels. Let ``T_L``
be the latest time of a known legitimate record (none: minus infinity) and
``S`` the known frauds with time >= ``T_L``. Then

* ``TERMINAL_ID_KNOWN_FRAUD_STREAK`` = |S|;
* ``TERMINAL_ID_KNOWN_FRAUD_STREAK_AGE_DAYS`` = (t - earliest time in S) / day,
  0 when S is empty;
* ``TERMINAL_ID_LAST_KNOWN_LEGIT_AGE_DAYS`` = (t - T_L) / day, reach / day when
  there is no known legitimate record.

Only times and labels enter, never the order in which records arrived, so a
fraud and a legitimate payment in the same second give the same values
whichever came first (the fraud counts as the later one).

The offline computation (``terminal_history``) is vectorised over a whole
stream; ``from_records`` is the same definition over one transaction's
records, used by the online loop (``engine.features_online``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import (
    DAY_S,
    LABEL_DELAY_DAYS,
    TERMINAL_HISTORY_NAMES,
    TERMINAL_WINDOWS_DAYS,
)

FloatArray = npt.NDArray[np.float64]

#: How far back the known records reach, beyond the delay: the longest terminal window.
HISTORY_WINDOW_DAYS: Final = max(TERMINAL_WINDOWS_DAYS)
N_HISTORY: Final = len(TERMINAL_HISTORY_NAMES)


def no_legit_age_days(label_delay_days: float = LABEL_DELAY_DAYS) -> float:
    """The legitimate-payment age given when the terminal has none known: the reach."""
    return float(label_delay_days + HISTORY_WINDOW_DAYS)


def from_records(
    t: float, records: Iterable[tuple[float, float]], *, label_delay_days: float = LABEL_DELAY_DAYS
) -> tuple[float, float, float]:
    """The three values for a transaction at ``t`` from its terminal's (time, fraud) records.

    ``records`` may hold any records of the terminal: those outside the known
    window are ignored here.
    """
    delay = label_delay_days * DAY_S
    reach = (label_delay_days + HISTORY_WINDOW_DAYS) * DAY_S
    known = [(time, fraud) for time, fraud in records if delay <= t - time < reach]
    last_legit = max((time for time, fraud in known if not fraud), default=-math.inf)
    streak = [time for time, fraud in known if fraud and time >= last_legit]
    streak_age = (t - min(streak)) / DAY_S if streak else 0.0
    legit_age = (
        (t - last_legit) / DAY_S if last_legit > -math.inf else no_legit_age_days(label_delay_days)
    )
    return float(len(streak)), streak_age, legit_age


def terminal_history(
    *,
    event_time_s: npt.ArrayLike,
    terminal: npt.ArrayLike,
    fraud: npt.ArrayLike,
    label_delay_days: float = LABEL_DELAY_DAYS,
) -> FloatArray:
    """(n, 3) values in ``TERMINAL_HISTORY_NAMES`` order for a stream in time order.

    Every earlier row's label counts as known once ``label_delay_days`` have
    passed, as in ``features_offline.compute_features``. The delay must be
    positive: a row must never see its own label.
    """
    t = np.asarray(event_time_s, dtype=np.float64)
    term = np.asarray(terminal)
    labels = np.asarray(fraud)
    n = t.shape[0]
    if term.shape != (n,) or labels.shape != (n,):
        raise ValueError("event_time_s, terminal and fraud must be 1-d arrays of one length")
    if labels.dtype != np.bool_:
        raise ValueError("fraud must be a boolean array")
    if not label_delay_days > 0:
        raise ValueError("label_delay_days must be > 0: a row must never see its own label")
    out = np.zeros((n, N_HISTORY), dtype=np.float64)
    out[:, 2] = no_legit_age_days(label_delay_days)
    if n == 0:
        return out
    delay = label_delay_days * DAY_S
    reach = (label_delay_days + HISTORY_WINDOW_DAYS) * DAY_S
    # Sort by (terminal, time, label): within one second a legitimate record comes
    # first, so the records after the last legitimate one are exactly S.
    times, rank = np.unique(t, return_inverse=True)
    _, key = np.unique(term, return_inverse=True)
    base = key.astype(np.int64) * (2 * times.shape[0] + 2)
    composite = base + 2 * rank.astype(np.int64) + labels
    order = np.argsort(composite, kind="stable")
    sorted_composite = composite[order]
    sorted_t = t[order]
    legit = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(~labels[order], out=legit[1:])
    # Known records: rank in (rank of t - reach, rank of t - delay], any label.
    lo_rank = np.searchsorted(times, t - reach, side="right")
    hi_rank = np.searchsorted(times, t - delay, side="right")
    first = np.searchsorted(sorted_composite, base + 2 * lo_rank)
    stop = np.searchsorted(sorted_composite, base + 2 * hi_rank)
    has_legit = legit[stop] > legit[first]
    # The last legitimate record before ``stop``: where the legit count reaches its final value.
    last_legit = np.searchsorted(legit, legit[stop], side="left") - 1
    streak_from = np.where(has_legit, last_legit + 1, first)
    streak = stop - streak_from
    out[:, 0] = streak
    np.divide(t - sorted_t[np.minimum(streak_from, n - 1)], DAY_S, out=out[:, 1], where=streak > 0)
    np.divide(t - sorted_t[np.maximum(last_legit, 0)], DAY_S, out=out[:, 2], where=has_legit)
    return out
