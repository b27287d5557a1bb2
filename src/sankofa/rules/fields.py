"""What a rule may read: the transaction's own fields and the served features.

Each field has a kind (number, string or boolean) and, from a batch, one numpy
array of the batch's length. Arrays are built only for the fields the rule set
reads (``Columns`` builds each on first use and keeps it for the batch), from
either a live batch (transactions plus the feature matrix) or stored rows (the
backtest), so a rule means the same thing in both.

Transaction fields: ``amount`` (reais, a number), ``type`` (``card``, ``pix``,
``ted``, ``boleto``), ``currency``, ``channel`` (``""`` when absent),
``terminal_id``, ``has_device``, ``has_ip``, ``local_hour`` (0-23, in the
timestamp's own offset). Features (``engine.feature_names``), named after their
reason codes in lower case: ``is_night`` (00:00-06:59 local, the handbook's
night), ``is_weekend``, ``customer_tx_count_1d``, ``customer_avg_amount_1d``
(and ``_7d``, ``_30d``), ``terminal_tx_count_1d``, ``terminal_risk_1d`` (and
``_7d``, ``_30d``), ``terminal_known_fraud_streak``,
``terminal_fraud_streak_age``, ``terminal_last_legit_age``. A feature Redis
could not give (degraded scoring) is NaN: every comparison with it is false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine import constants as C
from sankofa.engine.feature_names import SERVED_FEATURE_NAMES
from sankofa.engine.transaction import Transaction
from sankofa.rules.expr import FieldSpec

Array = npt.NDArray[np.generic]

#: Feature fields: rule name -> column of the served feature matrix.
FEATURE_COLUMNS: Final[dict[str, int]] = {}
for _i, _name in enumerate(SERVED_FEATURE_NAMES):
    _code = C.FEATURE_REASON_CODES[_name]
    if _name == "TX_AMOUNT":
        continue  # `amount` comes from the transaction itself, exact
    if _name == "TX_DURING_NIGHT":
        FEATURE_COLUMNS["is_night"] = _i
    elif _name == "TX_DURING_WEEKEND":
        FEATURE_COLUMNS["is_weekend"] = _i
    else:
        FEATURE_COLUMNS[_code.lower()] = _i
_BOOL_FEATURES: Final = frozenset({"is_night", "is_weekend"})

#: Every field a rule may name, with its kind and closed set of values (if any).
FIELDS: Final[dict[str, FieldSpec]] = {
    "amount": ("num", None),
    "type": ("str", C.TRANSACTION_TYPES),
    "currency": ("str", None),
    "channel": ("str", None),
    "terminal_id": ("str", None),
    "has_device": ("bool", None),
    "has_ip": ("bool", None),
    "local_hour": ("num", None),
    **{name: ("bool" if name in _BOOL_FEATURES else "num", None) for name in FEATURE_COLUMNS},
}


class Columns:
    """A batch's fields as arrays, built on first use."""

    __slots__ = ("_built", "_makers", "n")

    def __init__(self, n: int, makers: Mapping[str, Callable[[], Array]]) -> None:
        self.n = n
        self._makers = makers
        self._built: dict[str, Array] = {}

    def get(self, name: str) -> Array:
        col = self._built.get(name)
        if col is None:
            col = self._built[name] = self._makers[name]()
        return col


def _features(x: npt.NDArray[np.float64]) -> dict[str, Callable[[], Array]]:
    out: dict[str, Callable[[], Array]] = {}
    for name, j in FEATURE_COLUMNS.items():
        if name in _BOOL_FEATURES:
            out[name] = lambda j=j: x[:, j] == 1.0  # type: ignore[misc]
        else:
            out[name] = lambda j=j: x[:, j]  # type: ignore[misc]
    return out


def _text(values: Sequence[str | None]) -> Array:
    # Object arrays: built several times faster than fixed-width unicode ones from
    # Python strings (a terminal id may be 128 characters wide), and compared fast
    # enough for the few comparisons a rule set makes on them.
    out = np.empty(len(values), dtype=object)
    out[:] = [v if v is not None else "" for v in values]
    return out


def _hour(local_time_s: npt.NDArray[np.float64]) -> Array:
    return np.floor_divide(np.mod(local_time_s, 86_400.0), 3600.0)


def live_columns(txs: Sequence[Transaction], x: npt.NDArray[np.float64]) -> Columns:
    """Columns of a batch being scored: its transactions and their feature matrix."""
    n = len(txs)
    makers: dict[str, Callable[[], Array]] = {
        "amount": lambda: np.fromiter((t.amount_cents for t in txs), np.float64, n) / 100.0,
        "type": lambda: _text([t.type for t in txs]),
        "currency": lambda: _text([t.currency for t in txs]),
        "channel": lambda: _text([t.channel for t in txs]),
        "terminal_id": lambda: _text([t.terminal_id for t in txs]),
        "has_device": lambda: np.fromiter((t.device_ref is not None for t in txs), np.bool_, n),
        "has_ip": lambda: np.fromiter((t.ip_ref is not None for t in txs), np.bool_, n),
        "local_hour": lambda: _hour(np.fromiter((t.local_time_s for t in txs), np.float64, n)),
        **_features(x),
    }
    return Columns(n, makers)


def stored_columns(
    *,
    amount_cents: npt.NDArray[np.int64],
    tx_type: Sequence[str],
    currency: Sequence[str],
    channel: Sequence[str | None],
    terminal_id: Sequence[str],
    has_device: npt.NDArray[np.bool_],
    has_ip: npt.NDArray[np.bool_],
    local_time_s: npt.NDArray[np.float64],
    x: npt.NDArray[np.float64],
) -> Columns:
    """Columns of stored transactions (the backtest), with their stored features."""
    makers: dict[str, Callable[[], Array]] = {
        "amount": lambda: amount_cents.astype(np.float64) / 100.0,
        "type": lambda: _text(tx_type),
        "currency": lambda: _text([c.strip() for c in currency]),
        "channel": lambda: _text(channel),
        "terminal_id": lambda: _text(terminal_id),
        "has_device": lambda: has_device,
        "has_ip": lambda: has_ip,
        "local_hour": lambda: _hour(local_time_s),
        **_features(x),
    }
    return Columns(len(amount_cents), makers)
