"""The model's input vector: names, order and window definitions.

The service computes ``SERVED_FEATURE_NAMES``: the Fraud Detection
Handbook's vector (``FEATURE_NAMES``: the amount, then the handbook's 14 in its
order, handbook-spec.md section 2), followed by ``TERMINAL_HISTORY_NAMES``,
three facts about the terminal's known labels that the handbook's ratios blur
(see ``engine.terminal_history``). Online (Redis) and offline (numpy) feature
code both build exactly this vector, and a model artefact names the leading
part of it that it was trained on, so a model can only be loaded against the
features it was trained on.
"""

from __future__ import annotations

from typing import Final

DAY_S: Final = 86_400
#: Customer spending windows, in days: (t - w days, t], current transaction included.
CUSTOMER_WINDOWS_DAYS: Final = (1, 7, 30)
#: Terminal risk windows, in days: (t - (delay + w) days, t - delay days].
TERMINAL_WINDOWS_DAYS: Final = (1, 7, 30)
#: Labels become known this long after the transaction (the handbook's 7 days).
LABEL_DELAY_DAYS: Final = 7
#: A transaction is at night when its local hour is <= this (00:00:00-06:59:59).
NIGHT_LAST_HOUR: Final = 6

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
)
N_FEATURES: Final = len(FEATURE_NAMES)

#: After the handbook's vector: the terminal's known-label history over its
#: longest window (engine.terminal_history): how many of its latest known
#: labels are frauds in a row, how long ago that run began (days), and how long
#: ago its latest known legitimate transaction was (days).
TERMINAL_HISTORY_NAMES: Final[tuple[str, ...]] = (
    "TERMINAL_ID_KNOWN_FRAUD_STREAK",
    "TERMINAL_ID_KNOWN_FRAUD_STREAK_AGE_DAYS",
    "TERMINAL_ID_LAST_KNOWN_LEGIT_AGE_DAYS",
)
#: What the service computes for every transaction, and stores with it.
SERVED_FEATURE_NAMES: Final[tuple[str, ...]] = FEATURE_NAMES + TERMINAL_HISTORY_NAMES
N_SERVED_FEATURES: Final = len(SERVED_FEATURE_NAMES)
