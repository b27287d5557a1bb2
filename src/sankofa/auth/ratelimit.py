"""A token bucket per client, in process memory.

Each client may send ``rate_per_s`` requests per second on average and bursts
of up to ``burst``. The buckets live in each worker process: with W workers
(or instances) behind a balancer, a client's effective rate is up to W times
its configured rate. That is documented (docs/security.md) and chosen over a
Redis round trip per request, which the scoring path is designed to avoid
(one Redis call per batch, not per request).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

#: Buckets kept at most; beyond it the oldest is dropped (it refills in full,
#: which only ever favours that client).
MAX_BUCKETS: Final = 100_000


class TokenBuckets:
    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: float,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s < 0 or burst < 1 or max_buckets < 1:
            raise ValueError("rate_per_s must be >= 0, burst and max_buckets >= 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._max = max_buckets
        self._clock = clock
        # key -> [tokens left, time of last update]
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, rate_per_s: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is there.
        ``rate_per_s`` overrides the default rate for this key; 0 means no limit."""
        rate = self.rate_per_s if rate_per_s is None else rate_per_s
        if rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate
