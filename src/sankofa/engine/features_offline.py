"""The model's 15 features for a whole batch of transactions, with numpy.

This is the offline twin of the online (Redis) feature store: training and
evaluation use it, and tests hold it equal to the Fraud Detection Handbook's
published features (``compute_features``) and to the online store
(``compute_served_features``, which adds ``engine.terminal_history``). Both
must implement exactly these semantics:

* Rows form a stream in the given order. A row sees itself and the rows
  before it; a later row with the same timestamp is not seen (a stream has
  not received it yet). ``event_time_s`` must therefore be non-decreasing.
* Customer windows are (t - w days, t], the current row included, so the
  count is at least 1; AVG_AMOUNT is the summed amount / that count.
* Terminal windows are (t - (delay + w) days, t - delay days]: only rows whose
  label is known by now. RISK is frauds / count among them, 0 when empty.
* Weekend and night use local time (event time plus the UTC offset):
  Saturday or Sunday; hour <= ``NIGHT_LAST_HOUR``.

Per-window counts and sums come from one sort by (key, time, position) and
prefix sums: a window is a contiguous run of a key's sorted rows, found with
``searchsorted``, so the whole computation is O(n log n) and vectorised.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import (
    CUSTOMER_WINDOWS_DAYS,
    DAY_S,
    FEATURE_NAMES,
    LABEL_DELAY_DAYS,
    N_FEATURES,
    NIGHT_LAST_HOUR,
    TERMINAL_WINDOWS_DAYS,
)
from sankofa.engine.terminal_history import terminal_history

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: 1970-01-01 was a Thursday: weekday index 3 with Monday = 0.
_EPOCH_WEEKDAY = 3
_SATURDAY = 5
_HOUR_S = 3600


def compute_features(
    *,
    event_time_s: npt.ArrayLike,
    local_time_s: npt.ArrayLike,
    customer: npt.ArrayLike,
    terminal: npt.ArrayLike,
    amount_cents: npt.ArrayLike,
    fraud: npt.ArrayLike,
    label_delay_days: float = LABEL_DELAY_DAYS,
) -> FloatArray:
    """The (n, 15) feature matrix in ``FEATURE_NAMES`` order, rows as given.

    ``customer`` and ``terminal`` may be any sortable codes (ints usually).
    ``fraud`` is the label of each row; a row's own label never reaches its
    own features, since terminal windows end ``label_delay_days`` before it.
    """
    t = np.asarray(event_time_s, dtype=np.float64)
    n = t.shape[0]
    local = np.asarray(local_time_s, dtype=np.float64)
    cust = np.asarray(customer)
    term = np.asarray(terminal)
    cents = np.asarray(amount_cents)
    labels = np.asarray(fraud)
    for name, arr in (
        ("event_time_s", t),
        ("local_time_s", local),
        ("customer", cust),
        ("terminal", term),
        ("amount_cents", cents),
        ("fraud", labels),
    ):
        if arr.shape != (n,):
            raise ValueError(f"{name} must be a 1-d array of length {n}, got shape {arr.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(local))):
        raise ValueError("event_time_s and local_time_s must be finite")
    if n > 1 and np.any(t[1:] < t[:-1]):
        raise ValueError("event_time_s must be non-decreasing: rows are a stream in time order")
    if not np.issubdtype(cents.dtype, np.integer):
        raise ValueError("amount_cents must be integers (exact cents)")
    if labels.dtype != np.bool_:
        raise ValueError("fraud must be a boolean array")
    if label_delay_days < 0:
        raise ValueError("label_delay_days must be >= 0")

    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    out[:, col["TX_AMOUNT"]] = cents / 100.0
    day = np.floor(local / DAY_S)
    out[:, col["TX_DURING_WEEKEND"]] = (day + _EPOCH_WEEKDAY) % 7 >= _SATURDAY
    out[:, col["TX_DURING_NIGHT"]] = local - day * DAY_S < (NIGHT_LAST_HOUR + 1) * _HOUR_S

    by_customer = _GroupedStream(cust, t)
    cents64 = cents.astype(np.int64)
    for w in CUSTOMER_WINDOWS_DAYS:
        count, total = by_customer.window(t - w * DAY_S, t, cents64)
        out[:, col[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"]] = count
        # One division of two exact integers: the correctly rounded mean.
        out[:, col[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"]] = total / (count * 100.0)

    by_terminal = _GroupedStream(term, t)
    frauds64 = labels.astype(np.int64)
    known_until = t - label_delay_days * DAY_S
    for w in TERMINAL_WINDOWS_DAYS:
        count, nb_fraud = by_terminal.window(known_until - w * DAY_S, known_until, frauds64)
        out[:, col[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"]] = count
        risk = np.zeros(n, dtype=np.float64)
        np.divide(nb_fraud, count, out=risk, where=count > 0)
        out[:, col[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"]] = risk
    return out


def compute_served_features(
    *,
    event_time_s: npt.ArrayLike,
    local_time_s: npt.ArrayLike,
    customer: npt.ArrayLike,
    terminal: npt.ArrayLike,
    amount_cents: npt.ArrayLike,
    fraud: npt.ArrayLike,
    label_delay_days: float = LABEL_DELAY_DAYS,
) -> FloatArray:
    """The (n, 18) matrix the service computes (``SERVED_FEATURE_NAMES`` order).

    ``compute_features`` followed by the terminal's known-label history; the
    same arguments and rules.
    """
    handbook = compute_features(
        event_time_s=event_time_s,
        local_time_s=local_time_s,
        customer=customer,
        terminal=terminal,
        amount_cents=amount_cents,
        fraud=fraud,
        label_delay_days=label_delay_days,
    )
    history = terminal_history(
        event_time_s=event_time_s,
        terminal=terminal,
        fraud=fraud,
        label_delay_days=label_delay_days,
    )
    return np.hstack([handbook, history])


class _GroupedStream:
    """Rows sorted by (key, time, position), for window counts and sums per key.

    Times are replaced by their rank among the distinct times, so that
    ``key * (n_times + 1) + rank`` is an exact int64 sort key whatever the
    float times are; a window bound becomes "rank below r" the same way.
    """

    __slots__ = ("_base", "_order", "_sorted", "_times")

    def __init__(self, key: npt.NDArray[np.generic], time: FloatArray) -> None:
        self._times, time_rank = np.unique(time, return_inverse=True)
        _, key_code = np.unique(key, return_inverse=True)
        self._base = key_code.astype(np.int64) * (self._times.shape[0] + 1)
        composite = self._base + time_rank
        self._order = np.argsort(composite, kind="stable")
        self._sorted = composite[self._order]

    def window(self, lo: FloatArray, hi: FloatArray, values: IntArray) -> tuple[IntArray, IntArray]:
        """Per row: count and sum of ``values`` over same-key rows with time in (lo, hi].

        Only rows at or before the row's own stream position are counted.
        """
        # Each search gets its queries in non-decreasing order (``lo`` and ``hi``
        # follow the time order of the rows; ``base + rank`` the sorted order):
        # numpy's binary search then reuses the previous bound and stays in cache.
        order = self._order
        base = self._base[order]
        lo_rank = np.searchsorted(self._times, lo, side="right")[order]
        hi_rank = np.searchsorted(self._times, hi, side="right")[order]
        first = np.searchsorted(self._sorted, base + lo_rank)
        stop = np.searchsorted(self._sorted, base + hi_rank)
        stop = np.minimum(stop, np.arange(1, order.shape[0] + 1))
        first = np.minimum(first, stop)
        prefix = np.zeros(values.shape[0] + 1, dtype=np.int64)
        np.cumsum(values[order], out=prefix[1:])
        count = np.empty(order.shape[0], dtype=np.int64)
        total = np.empty(order.shape[0], dtype=np.int64)
        count[order] = stop - first
        total[order] = prefix[stop] - prefix[first]
        return count, total
