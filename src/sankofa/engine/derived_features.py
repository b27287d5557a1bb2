"""Model inputs derived from the served vector, by one function for training and serving.

Trees split on one feature at a time, so a ratio such as "this amount against
the customer's own average" costs a tree many splits to approximate, and the
handbook's fraud scenarios are exactly such ratios (a stolen card's amounts
multiplied by 5; a compromised terminal's known fraud count). These values are
computed from the 18 served features only, inside the model's ``predict``, by
``derive`` here, and training calls the same function on the offline
features. Online and offline served features are proven equal, so the
derived ones are too, with nothing more to keep in sync.

Every value is finite for any finite input: denominators have floors, and a
NaN or infinity that overflow could still produce becomes 0 or the largest
float, identically in training and in serving.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import N_SERVED_FEATURES, SERVED_FEATURE_NAMES

FloatArray = npt.NDArray[np.float64]

#: Smallest average amount a ratio divides by (one cent), and smallest daily rate.
_MIN_AMOUNT: Final = 0.01
_MIN_RATE: Final = 1e-3

DERIVED_NAMES: Final[tuple[str, ...]] = (
    "AMOUNT_TO_CUSTOMER_AVG_1DAY",
    "AMOUNT_TO_CUSTOMER_AVG_7DAY",
    "AMOUNT_TO_CUSTOMER_AVG_30DAY",
    "CUSTOMER_AVG_1DAY_TO_30DAY",
    "CUSTOMER_AVG_7DAY_TO_30DAY",
    "CUSTOMER_TX_RATE_1DAY_TO_30DAY",
    "CUSTOMER_TX_RATE_7DAY_TO_30DAY",
    "AMOUNT_TO_CUSTOMER_AVG_BEFORE_TODAY",
    "TERMINAL_ID_KNOWN_FRAUDS_1DAY_WINDOW",
    "TERMINAL_ID_KNOWN_FRAUDS_7DAY_WINDOW",
    "TERMINAL_ID_KNOWN_FRAUDS_30DAY_WINDOW",
)
#: A tree model's inputs: the served vector, then the derived values.
MODEL_INPUT_NAMES: Final[tuple[str, ...]] = SERVED_FEATURE_NAMES + DERIVED_NAMES
N_MODEL_INPUTS: Final = len(MODEL_INPUT_NAMES)

_COL: Final = {name: k for k, name in enumerate(SERVED_FEATURE_NAMES)}


def derive(served: FloatArray) -> FloatArray:
    """(n, 29) model inputs: the (n, 18) served matrix followed by ``DERIVED_NAMES``."""
    x = np.asarray(served, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_SERVED_FEATURES:
        raise ValueError(f"served must have shape (n, {N_SERVED_FEATURES}), got {x.shape}")
    c = _COL
    amount = x[:, c["TX_AMOUNT"]]
    n1, n7, n30 = (x[:, c[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"]] for w in (1, 7, 30))
    a1, a7, a30 = (x[:, c[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"]] for w in (1, 7, 30))
    out = np.empty((x.shape[0], N_MODEL_INPUTS), dtype=np.float64)
    out[:, :N_SERVED_FEATURES] = x
    k = N_SERVED_FEATURES
    with np.errstate(all="ignore"):
        for avg in (a1, a7, a30):
            out[:, k] = amount / np.maximum(avg, _MIN_AMOUNT)
            k += 1
        out[:, k] = a1 / np.maximum(a30, _MIN_AMOUNT)
        out[:, k + 1] = a7 / np.maximum(a30, _MIN_AMOUNT)
        out[:, k + 2] = n1 / np.maximum(n30 / 30.0, _MIN_RATE)
        out[:, k + 3] = n7 / np.maximum(n30 * (7.0 / 30.0), _MIN_RATE)
        # The customer's average over (t - 30 d, t - 1 d]: before today's spending.
        earlier = n30 - n1
        before = np.where(earlier > 0, (n30 * a30 - n1 * a1) / np.maximum(earlier, 1.0), a30)
        out[:, k + 4] = amount / np.maximum(before, _MIN_AMOUNT)
        k += 5
        for w in (1, 7, 30):
            count = x[:, c[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"]]
            risk = x[:, c[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"]]
            out[:, k] = count * risk
            k += 1
    np.nan_to_num(out[:, N_SERVED_FEATURES:], copy=False, nan=0.0)
    return out
