"""The generator's engine: sends prebuilt requests over a set of channels and records each one.

Two models:

* :class:`OpenLoop` (what load tests use): request ``i`` is due at its
  intended time, whatever happened to earlier ones. A due request takes a free
  channel, or waits in FIFO order for the next one to free up. Latency runs
  from the intended time (from the actual send if that was earlier, see
  ``constants.DISPATCH_EARLY_S``), so a generator or server that falls behind
  shows up in the figures instead of silently lowering the offered rate
  ("coordinated omission").
* :class:`ClosedLoop` (only to find the generator's own ceiling): every
  channel sends its next request as soon as the previous answer arrives,
  until a stop time. Latency runs from the actual send.

Everything is driven by callbacks from the channels and timers of an injected
:class:`~sankofa.queues.clock.Clock`: no task or future per request, and tests
run the engine on a :class:`~sankofa.queues.clock.ManualClock` with fake
channels, deterministically.

Results are kept in preallocated ``array.array`` columns (absolute clock
times and an int16 status per request): assigning into them costs about as
much as appending to a list, and they become numpy arrays without a copy.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from sankofa.load.constants import CODE_TIMEOUT, DISPATCH_EARLY_S, WATCHDOG_INTERVAL_S
from sankofa.load.http import ResponseHandler
from sankofa.queues.clock import Clock, TimerHandle


class Channel(Protocol):
    """What the engine needs of a connection (``http.Connection`` is one)."""

    token: int | None
    on_response: ResponseHandler

    def send(self, data: bytes, token: int) -> None: ...

    def abort(self, code: int = CODE_TIMEOUT) -> None: ...


class _Engine:
    """Recording, answers, deadlines and completion, shared by both models."""

    def __init__(
        self,
        *,
        clock: Clock,
        channels: Sequence[Channel],
        payloads: Sequence[bytes],
        capacity: int,
        timeout_s: float,
        on_finished: Callable[[], None] | None = None,
        intended: array[float] | None = None,
    ) -> None:
        if not channels:
            raise ValueError("channels must not be empty")
        if not payloads:
            raise ValueError("payloads must not be empty")
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._clock = clock
        self._channels = list(channels)
        self._payloads = payloads
        self._n_payloads = len(payloads)
        self._timeout_s = timeout_s
        self._on_finished = on_finished
        # LIFO: at a low rate the same few connections stay warm instead of
        # every connection idling past the server's keep-alive timeout.
        self._idle: list[Channel] = list(reversed(self._channels))
        self._capacity = capacity
        nan = array("d", [math.nan])
        #: Absolute clock times per request: intended, sent, answered (NaN if not).
        self.intended = intended if intended is not None else nan * capacity
        self.sent = nan * capacity
        self.done = nan * capacity
        #: HTTP status, or a negative ``CODE_*``; 0 = never finished.
        self.status = array("h", bytes(2 * capacity))
        #: Request indexes in the order they finished (for live progress).
        self.finish_order = array("q", bytes(8 * capacity))
        self.n_sent = 0
        self.n_finished = 0
        self.n_ok = 0
        self.n_errors = 0
        #: Requests that waited for a free channel, and the longest such queue.
        self.n_waited = 0
        self.max_waiting = 0
        #: (status, whether Retry-After was present) for 429 / 503 / 504.
        self.retry_after: Counter[tuple[int, bool]] = Counter()
        self.finished = False
        self._watchdog: TimerHandle | None = None
        for ch in self._channels:
            ch.on_response = self._on_response

    @property
    def n_requests(self) -> int:
        """Slots used so far (open loop: the whole schedule)."""
        return self._capacity

    def _send(self, ch: Channel, i: int, now: float) -> None:
        self.sent[i] = now
        self.n_sent += 1
        ch.send(self._payloads[i % self._n_payloads], i)

    def _record(self, i: int, status: int, now: float) -> None:
        self.done[i] = now
        self.status[i] = status
        self.finish_order[self.n_finished] = i
        self.n_finished += 1
        if 200 <= status < 300:
            self.n_ok += 1
        else:
            self.n_errors += 1

    def _on_response(
        self, ch: Channel, token: int, status: int, retry_after: bytes | None, body: bytes
    ) -> None:
        now = self._clock.now()
        self._record(token, status, now)
        if status in (429, 503, 504):
            self.retry_after[(status, retry_after is not None)] += 1
        self._release(ch, now)
        self._check_finished()

    def _release(self, ch: Channel, now: float) -> None:
        raise NotImplementedError

    def _all_done(self) -> bool:
        raise NotImplementedError

    def _check_finished(self) -> None:
        if not self.finished and self._all_done():
            self.finished = True
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            if self._on_finished is not None:
                self._on_finished()

    def _arm_watchdog(self) -> None:
        self._watchdog = self._clock.call_at(self._clock.now() + WATCHDOG_INTERVAL_S, self._watch)

    def _watch(self) -> None:
        """Give up requests past their deadline: in flight, or still waiting for a channel."""
        self._watchdog = None
        if self.finished:
            return
        now = self._clock.now()
        limit = now - self._timeout_s
        intended = self.intended
        for ch in self._channels:
            token = ch.token
            if token is not None and intended[token] < limit:
                ch.abort(CODE_TIMEOUT)  # reports through _on_response
        self._expire_waiting(limit, now)
        self._check_finished()
        if not self.finished:
            self._arm_watchdog()

    def _expire_waiting(self, limit: float, now: float) -> None:
        pass


class OpenLoop(_Engine):
    """Requests sent at their intended times (absolute clock times, ascending)."""

    def __init__(
        self,
        *,
        clock: Clock,
        channels: Sequence[Channel],
        payloads: Sequence[bytes],
        intended: Sequence[float],
        timeout_s: float,
        early_s: float = DISPATCH_EARLY_S,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        times = array("d", intended)
        super().__init__(
            clock=clock,
            channels=channels,
            payloads=payloads,
            capacity=len(times),
            timeout_s=timeout_s,
            on_finished=on_finished,
            intended=times,
        )
        if early_s < 0:
            raise ValueError("early_s must be >= 0")
        if any(b < a for a, b in zip(self.intended, self.intended[1:], strict=False)):
            raise ValueError("intended times must be ascending")
        self._n = len(self.intended)
        self._early_s = early_s
        self._lead_s = early_s / 2
        self._next = 0
        self._waiting: deque[int] = deque()
        self._timer: TimerHandle | None = None
        #: Per wake-up with something due: how late its most overdue request was
        #: (negative: early). The dispatcher's own punctuality, apart from any
        #: wait for a free connection.
        self.wake_lateness = array("d")

    def start(self) -> None:
        """Arm the first dispatch; the schedule then runs by itself."""
        self._arm_watchdog()
        if self._n:
            self._timer = self._clock.call_at(self.intended[0] - self._lead_s, self._tick)
        else:
            self._check_finished()

    def _tick(self) -> None:
        self._timer = None
        now = self._clock.now()
        horizon = now + self._early_s
        intended = self.intended
        idle = self._idle
        n = self._n
        i = self._next
        if i < n and intended[i] <= horizon:
            self.wake_lateness.append(now - intended[i])
        while i < n and intended[i] <= horizon:
            if idle:
                self._send(idle.pop(), i, now)
            else:
                self._waiting.append(i)
                self.n_waited += 1
            i += 1
        self._next = i
        if len(self._waiting) > self.max_waiting:
            self.max_waiting = len(self._waiting)
        if i < n:
            # intended[i] > now + early_s, so this timer is at least early_s / 2 away.
            self._timer = self._clock.call_at(intended[i] - self._lead_s, self._tick)

    def _release(self, ch: Channel, now: float) -> None:
        waiting = self._waiting
        limit = now - self._timeout_s
        while waiting:
            i = waiting.popleft()
            if self.intended[i] < limit:
                self._record(i, CODE_TIMEOUT, now)  # expired while waiting: never sent
                continue
            self._send(ch, i, now)
            return
        self._idle.append(ch)

    def _expire_waiting(self, limit: float, now: float) -> None:
        waiting = self._waiting
        while waiting and self.intended[waiting[0]] < limit:
            self._record(waiting.popleft(), CODE_TIMEOUT, now)

    def _all_done(self) -> bool:
        return self._next >= self._n and self.n_finished >= self._n

    def stop(self) -> None:
        """Send nothing more that is not due yet (a run cut short); answers still count."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._n = self._next
        self._check_finished()

    @property
    def n_requests(self) -> int:
        return self._n


class ClosedLoop(_Engine):
    """Each channel sends again as soon as it is answered, until ``stop_at``."""

    def __init__(
        self,
        *,
        clock: Clock,
        channels: Sequence[Channel],
        payloads: Sequence[bytes],
        stop_at: float,
        capacity: int,
        timeout_s: float,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            clock=clock,
            channels=channels,
            payloads=payloads,
            capacity=capacity,
            timeout_s=timeout_s,
            on_finished=on_finished,
        )
        self._stop_at = stop_at
        self._next = 0
        self._stop_timer: TimerHandle | None = None

    def start(self) -> None:
        """Put every channel to work at once."""
        self._arm_watchdog()
        self._stop_timer = self._clock.call_at(self._stop_at, self._check_finished)
        now = self._clock.now()
        while self._idle and self._next < self._capacity and now < self._stop_at:
            self._start_one(self._idle.pop(), now)
        self._check_finished()

    def _start_one(self, ch: Channel, now: float) -> None:
        i = self._next
        self._next += 1
        self.intended[i] = now
        self._send(ch, i, now)

    def _release(self, ch: Channel, now: float) -> None:
        if now < self._stop_at and self._next < self._capacity:
            self._start_one(ch, now)
        else:
            self._idle.append(ch)

    def _all_done(self) -> bool:
        stopped = self._clock.now() >= self._stop_at or self._next >= self._capacity
        return stopped and self.n_finished >= self._next

    def stop(self) -> None:
        """Send nothing more; answers in flight still count."""
        self._stop_at = min(self._stop_at, self._clock.now())
        self._check_finished()

    @property
    def n_requests(self) -> int:
        return self._next
