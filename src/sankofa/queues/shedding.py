"""Shedding at the door, by event-loop lag, before a request costs anything.

The dispatcher refuses work by queue depth and estimated wait, but a request
reaches it only after the HTTP layer has parsed, routed and validated it.
When the process's one core is saturated, the backlog builds up before that
point (in the event loop's ready queue and in the clients' connection pools),
every class waits the same, and the dispatcher never sees a long queue:
measured here, critical p99 went from 5 ms alone to over 700 ms with normal
and low traffic at twice capacity, with no request refused.

Two signals measure that saturation directly, per worker process:

* the requests in progress inside the process (admitted, not yet answered):
  by Little's law, latency = in progress / throughput, so a cap per class caps
  the latency an admitted request of that class can see;
* the event loop's lag (how late a timer fires): the loop itself is saturated.

While either is above a class's limit, new requests of that class are
answered 503 with Retry-After at once, in the outermost middleware, which
costs a fraction of serving them. Lower classes have lower limits; critical
is never refused here (its queue bound and deadline still apply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sankofa.queues.priority import Priority

#: How often the lag is sampled, and the weight of the newest sample.
SAMPLE_EVERY_S = 0.005
_ALPHA = 0.3


class LoadShedder:
    """Smoothed event-loop lag, and which classes to refuse because of it."""

    def __init__(
        self,
        *,
        thresholds_s: Mapping[Priority, float | None],
        in_progress_limits: Mapping[Priority, int | None] | None = None,
    ) -> None:
        if set(thresholds_s) != set(Priority):
            raise ValueError("thresholds_s must name every priority class")
        if any(v is not None and v <= 0 for v in thresholds_s.values()):
            raise ValueError("thresholds must be > 0 (or None: never shed)")
        limits = (
            dict(in_progress_limits) if in_progress_limits is not None else dict.fromkeys(Priority)
        )
        if set(limits) != set(Priority) or any(v is not None and v < 1 for v in limits.values()):
            raise ValueError("in_progress_limits must give every class a limit >= 1 (or None)")
        self._thresholds = dict(thresholds_s)
        self._limits = limits
        self.lag_s = 0.0
        #: Scoring requests admitted and not yet answered, in this process.
        self.in_progress = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="sankofa-load-shedder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + SAMPLE_EVERY_S
            await asyncio.sleep(SAMPLE_EVERY_S)
            late = max(0.0, loop.time() - expected)
            self.lag_s += _ALPHA * (late - self.lag_s)

    def refuses(self, priority: Priority) -> bool:
        limit = self._limits[priority]
        if limit is not None and self.in_progress >= limit:
            return True
        threshold = self._thresholds[priority]
        return threshold is not None and self.lag_s > threshold
