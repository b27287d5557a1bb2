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

While either has stayed above a class's limit on every sample for the last
``sustain_s`` (150 ms by default), new requests of that class are answered 503
with Retry-After at once, in the outermost middleware, which costs a fraction
of serving them, until the signals have stayed clear for ``release_s``
(200 ms). Lower classes have lower limits; critical is never refused here
(its queue bound and deadline still apply).

Why *sustained*: a worker at 70 % of its capacity still has short stalls (a
garbage collection, a slow commit) and bursts of arrivals, after which the
requests that arrived meanwhile are admitted together. Measured in soaks at
70 % of capacity (docs/reliability.md): an instantaneous signal refused 0.07 %
of the requests, which the service would have served well within their
deadlines; 50 ms of sustain still refused some; 150 ms refused none. Real
overload keeps the signal up for seconds; a burst does not, so it is queued
and served instead. The price is the flood's first 150 ms, admitted before
the door closes (docs/reliability.md, "Overload", compares the settings).

Why not while *draining*: from steady state, a stall of 100-200 ms at 70 % of
capacity leaves a backlog that takes longer than the sustain to work off (the
spare 30 % drains it at under half the rate it built up), so a sustain alone
still refused requests that were being served in time (0.058 % of a soak).
What tells that backlog from overload is its direction: after a stall the
requests in progress fall, sample after sample; under overload they hold or
grow. So a class enters refusal only when, besides the sustain, the requests
in progress are not clearly below their highest of the last ``sustain_s``
(``DRAIN_MARGIN`` requests or ``DRAIN_FRACTION`` of that peak). A flood that
plateaus is not draining; the check costs one pass over 30 samples per sample.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping

from sankofa.queues.priority import Priority

#: How often the signals are sampled.
SAMPLE_EVERY_S = 0.005
#: Default time a signal must stay above a class's limit before it refuses.
SUSTAIN_S = 0.15
#: Default time a refusing class's signals must stay clear before it is served again.
RELEASE_S = 0.2

#: Below the window's peak by at least this many requests, and this fraction of
#: it, the requests in progress are draining (a stall's backlog being worked off).
DRAIN_MARGIN = 2
DRAIN_FRACTION = 0.1

LAG = "lag"
IN_PROGRESS = "in_progress"


class LoadShedder:
    """Event-loop lag and requests in progress, and which classes to refuse."""

    def __init__(
        self,
        *,
        thresholds_s: Mapping[Priority, float | None],
        in_progress_limits: Mapping[Priority, int | None] | None = None,
        sustain_s: float = SUSTAIN_S,
        release_s: float = RELEASE_S,
        clock: Callable[[], float] | None = None,
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
        if sustain_s < 0 or release_s < 0:
            raise ValueError("sustain_s and release_s must be >= 0")
        self._thresholds = dict(thresholds_s)
        self._limits = limits
        self._sustain_s = sustain_s
        self._release_s = release_s
        #: The event loop's clock unless a test injects one.
        self._clock = clock if clock is not None else _loop_time
        #: Scoring requests admitted and not yet answered, in this process.
        self.in_progress = 0
        #: Per class: since when (loop time) every sample has been above its
        #: limit, and by which signal; None while the class is within limits.
        self.over_since: dict[Priority, float | None] = dict.fromkeys(Priority)
        self.over_signal: dict[Priority, str] = dict.fromkeys(Priority, LAG)
        #: Per class: since when every sample has been within limits (None while over).
        self.clear_since: dict[Priority, float | None] = dict.fromkeys(Priority, 0.0)
        self._refusing: dict[Priority, bool] = dict.fromkeys(Priority, False)
        #: (loop time, requests in progress) of the samples of the last ``sustain_s``.
        self._recent: deque[tuple[float, int]] = deque()
        #: At the last sample: the requests in progress are falling from their peak.
        self.draining = False
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
        while True:
            expected = self._clock() + SAMPLE_EVERY_S
            await asyncio.sleep(SAMPLE_EVERY_S)
            now = self._clock()
            self.observe(max(0.0, now - expected), now)

    def observe(self, late_s: float, now: float) -> None:
        """Take one sample: how late the timer fired, at loop time ``now``."""
        n = self.in_progress
        recent = self._recent
        recent.append((now, n))
        horizon = now - self._sustain_s
        while recent[0][0] < horizon:
            recent.popleft()
        peak = max(c for _, c in recent)
        self.draining = n <= peak - max(DRAIN_MARGIN, DRAIN_FRACTION * peak)
        for priority in Priority:
            threshold = self._thresholds[priority]
            limit = self._limits[priority]
            if threshold is not None and late_s > threshold:
                signal: str | None = LAG
            elif limit is not None and self.in_progress >= limit:
                signal = IN_PROGRESS
            else:
                signal = None
            if signal is None:
                self.over_since[priority] = None
                if self.clear_since[priority] is None:
                    self.clear_since[priority] = now
            else:
                if self.over_since[priority] is None:
                    self.over_since[priority] = now
                self.clear_since[priority] = None
                self.over_signal[priority] = signal
            self._update(priority, now)

    def _update(self, priority: Priority, now: float) -> bool:
        """Enter refusal after ``sustain_s`` over and not draining; leave it after
        ``release_s`` clear."""
        if self._refusing[priority]:
            clear = self.clear_since[priority]
            if clear is not None and now - clear >= self._release_s:
                self._refusing[priority] = False
        else:
            over = self.over_since[priority]
            if over is not None and now - over >= self._sustain_s and not self.draining:
                self._refusing[priority] = True
        return self._refusing[priority]

    def refuses(self, priority: Priority) -> str | None:
        """The signal that refuses ``priority`` now (``lag`` or ``in_progress``), or None.

        Shedding itself clears the signals (fewer requests in progress, a free
        loop): without the release time a flood would be let in again at once,
        for another ``sustain_s``, over and over.
        """
        if self._update(priority, self._clock()):
            return self.over_signal[priority]
        return None


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
