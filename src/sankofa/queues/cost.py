"""What a batch costs, learnt from the batches just run.

A batch's time is close to ``fixed + per_item * n``: a fixed part (one Redis
round trip, one database transaction, task switches) and a part per
transaction. The model fits both by exponentially weighted least squares over
recent batches, so it follows the machine's load, and predicts the cost of a
batch of any size; the dispatcher uses it to decide how long it may wait for a
batch to grow and how large a batch may get before it endangers a deadline.
"""

from __future__ import annotations

import math


class BatchCostModel:
    """Weighted least squares of batch time on batch size, forgetting old batches."""

    def __init__(
        self, *, alpha: float = 0.1, prior_fixed_s: float = 0.002, prior_per_item_s: float = 0.00005
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if prior_fixed_s < 0 or prior_per_item_s < 0:
            raise ValueError("priors must be >= 0")
        self._alpha = alpha
        self._fixed = prior_fixed_s
        self._per_item = prior_per_item_s
        # Exponentially weighted moments of (n, t).
        self._w = 0.0
        self._sn = self._st = self._snn = self._snt = 0.0
        self.observed = 0

    def observe(self, items: int, seconds: float) -> None:
        if items < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        a = self._alpha
        keep = 1.0 - a
        self._w = keep * self._w + a
        self._sn = keep * self._sn + a * items
        self._st = keep * self._st + a * seconds
        self._snn = keep * self._snn + a * items * items
        self._snt = keep * self._snt + a * items * seconds
        self.observed += 1
        mean_n = self._sn / self._w
        mean_t = self._st / self._w
        var_n = self._snn / self._w - mean_n * mean_n
        if var_n > 1e-9 * max(1.0, mean_n * mean_n):
            per_item = (self._snt / self._w - mean_n * mean_t) / var_n
            per_item = max(per_item, 0.0)
        else:
            # Batch sizes have not varied yet: keep the slope, fit the level.
            per_item = self._per_item
        self._per_item = per_item
        self._fixed = max(mean_t - per_item * mean_n, 0.0)

    def estimate(self, items: int) -> float:
        """Predicted seconds for a batch of ``items`` transactions."""
        return self._fixed + self._per_item * max(items, 0)

    def largest_within(self, budget_s: float, cap: int) -> int:
        """The largest batch (at least 1, at most ``cap``) predicted to take <= budget_s."""
        if self._per_item <= 0:
            return cap
        n = int((budget_s - self._fixed) / self._per_item)
        return max(1, min(cap, n))

    @property
    def fixed_s(self) -> float:
        return self._fixed

    @property
    def per_item_s(self) -> float:
        return self._per_item
