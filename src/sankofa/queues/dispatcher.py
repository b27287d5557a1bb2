"""The priority dispatcher: bounded FIFOs per class, micro-batches, deadlines.

A request becomes a :class:`Job` (one or more transactions) in its class's FIFO.
One scheduler task forms batches and hands each to the injected batch handler,
with at most ``max_in_flight`` batches running at once.

Serving order
    Strict priority between classes (critical, high, normal, low) with ageing:
    a job that has waited ``ageing_s`` or more at the head of its queue is taken
    before any younger job, oldest first. So a low job that reaches the head of
    its queue is dispatched at most ``ageing_s`` plus one batch slot later,
    however much critical traffic arrives (or answered 504 at its deadline,
    if that comes first). Within a class, strictly first in, first out; jobs are
    never compared with each other, so any payload is fine.

Batching
    A batch holds up to ``max_batch_size`` transactions (a larger job goes
    alone). It leaves when it is full, when a critical job is queued (critical
    never waits for a batch to fill), when the oldest queued job has waited
    ``max_wait_s``, or at once while draining.

Deadlines
    Every job has a deadline (its class default, shortened by the request).
    A timer fires at the deadline: a job still queued then is answered with
    :class:`DeadlineExceededError` (504) and is never scored or stored.

Admission control
    Refused at once with :class:`OverloadedError` (503 + Retry-After) when the
    class's queue is full, when the whole backlog is past that class's share
    (low is shed at 50 % of total capacity, normal at 75 %, high at 90 %,
    critical only when its own queue is full), or when the estimated wait,
    from the measured throughput, exceeds the job's deadline.

Shutdown
    :meth:`Dispatcher.drain`: intake stops (DrainingError, 503), queued work is
    dispatched without waiting for batches to fill, until the grace deadline;
    jobs still queued then are answered 503. Batches already running finish:
    they are bounded by their own timeouts, and cutting one mid-commit could
    store a transaction whose client was told it failed.

Supervision
    A handler that raises fails only the jobs of that batch. If the scheduler
    task itself dies, it is logged and restarted.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sankofa.errors import DeadlineExceededError, DrainingError, OverloadedError
from sankofa.logs import REQUEST_ID
from sankofa.queues.clock import Clock, LoopClock, TimerHandle
from sankofa.queues.cost import BatchCostModel
from sankofa.queues.priority import Priority

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

#: Share of the total queue capacity beyond which a class is shed. Lower classes
#: are shed first; critical is refused only when its own queue is full.
DEFAULT_SHED_AT: Mapping[Priority, float] = {
    Priority.CRITICAL: 1.0,
    Priority.HIGH: 0.9,
    Priority.NORMAL: 0.75,
    Priority.LOW: 0.5,
}
#: The classes in serving order, and per class the classes served before or with
#: it: tuples, because iterating an Enum class is slow on a per-request path.
_CLASSES: tuple[Priority, ...] = tuple(Priority)
_AT_OR_ABOVE: dict[Priority, tuple[Priority, ...]] = {
    p: tuple(q for q in Priority if q <= p) for p in Priority
}
#: Weight of the newest batch in the throughput estimate (exponential average).
_THROUGHPUT_ALPHA = 0.2
#: Stop waiting for a batch to grow this long before the estimated cost would
#: carry a queued job past its deadline.
_DEADLINE_MARGIN_S = 0.005


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """Per-class limits: how many transactions may wait, and for how long."""

    queue_bound: int
    deadline_s: float

    def __post_init__(self) -> None:
        if self.queue_bound < 1:
            raise ValueError("queue_bound must be >= 1")
        if not self.deadline_s > 0:
            raise ValueError("deadline_s must be > 0")


@dataclass(eq=False, slots=True)
class Job(Generic[P, R]):
    """One request waiting for, or going through, a batch."""

    payload: P
    size: int
    priority: Priority
    enqueued_at: float
    deadline: float
    future: asyncio.Future[R]
    dispatched_at: float | None = None
    batch_size: int = 0
    queued: bool = True
    #: The submitting request's id (sankofa.logs): a batch runs in a task of its
    #: own, outside any request, so its error lines name their requests with it.
    request_id: str | None = None

    @property
    def queue_s(self) -> float:
        return 0.0 if self.dispatched_at is None else self.dispatched_at - self.enqueued_at


class DispatchObserver(Protocol):
    """Optional hooks for metrics; every call is cheap and must not raise."""

    def shed_one(self, priority: str) -> None: ...

    def expired_one(self, priority: str) -> None: ...

    def observe_queue_wait(self, priority: str, seconds: float) -> None: ...


#: Handler: called with a batch of jobs, returns one result (or exception) per job.
BatchHandler = Callable[[Sequence[Job[P, R]]], Awaitable[Sequence[R | BaseException]]]


@dataclass(slots=True)
class DispatcherStats:
    submitted: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    shed: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    expired: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    completed: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    failed: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    batches: int = 0
    batch_items: int = 0
    handler_errors: int = 0
    scheduler_restarts: int = 0


class Dispatcher(Generic[P, R]):
    """See the module docstring for the serving, batching and shedding rules."""

    def __init__(
        self,
        *,
        handler: BatchHandler[P, R],
        policies: Mapping[Priority, ClassPolicy],
        max_batch_size: int,
        max_wait_s: float,
        max_in_flight: int,
        ageing_s: float,
        clock: Clock | None = None,
        shed_at: Mapping[Priority, float] = DEFAULT_SHED_AT,
        observer: DispatchObserver | None = None,
    ) -> None:
        if set(policies) != set(Priority):
            raise ValueError("policies must name every priority class")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if not ageing_s > 0:
            raise ValueError("ageing_s must be > 0")
        if set(shed_at) != set(Priority) or not all(0 < v <= 1 for v in shed_at.values()):
            raise ValueError("shed_at must give every class a share in (0, 1]")
        self._handler = handler
        self._policies = dict(policies)
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_in_flight = max_in_flight
        self._ageing_s = ageing_s
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._observer = observer
        self._capacity = sum(p.queue_bound for p in self._policies.values())
        self._shed_limit = {p: shed_at[p] * self._capacity for p in Priority}

        self._queues: dict[Priority, deque[Job[P, R]]] = {p: deque() for p in Priority}
        self._queued_items: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._queued_total = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_items = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._wait_timer: TimerHandle | None = None
        self._wait_timer_at: float | None = None
        # Deadlines of queued jobs: one heap and one timer for its earliest, rather
        # than a timer per job. Entries of jobs no longer queued are dropped lazily.
        self._deadlines: list[tuple[float, int, Job[P, R]]] = []
        self._deadline_seq = itertools.count()
        self._deadline_timer: TimerHandle | None = None
        self._deadline_timer_at: float | None = None
        self.cost = BatchCostModel()
        self._scheduler: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = False
        #: Measured service rate, transactions per second; None until a batch ends.
        self._throughput: float | None = None
        self.stats = DispatcherStats()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done() and not self._closed

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError("dispatcher already started")
        self._supervisor = asyncio.create_task(self._supervise(), name="sankofa-dispatcher")

    async def _supervise(self) -> None:
        while not self._closed:
            self._scheduler = asyncio.create_task(self._schedule(), name="sankofa-scheduler")
            try:
                await self._scheduler
                return
            except asyncio.CancelledError:
                self._scheduler.cancel()
                raise
            except Exception:
                self.stats.scheduler_restarts += 1
                log.exception("dispatcher scheduler died; restarting it")

    async def drain(self, grace_s: float) -> int:
        """Stop intake, serve what is queued until ``grace_s``, refuse the rest.

        Returns how many jobs were still queued at the grace deadline.
        Calling it again once closed does nothing.
        """
        if self._closed:
            return 0
        self._draining = True
        self._kick()
        try:
            async with asyncio.timeout(grace_s):
                await self._wait_no_queued()
        except TimeoutError:
            pass
        left = 0
        for p in Priority:
            q = self._queues[p]
            while q:
                job = q.popleft()
                if self._unqueue(job) and not job.future.done():
                    left += 1
                    job.future.set_exception(
                        DrainingError("service is shutting down", retry_after_s=1.0)
                    )
        # Running batches finish: they are bounded by their own timeouts.
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self.close()
        return left

    async def close(self) -> None:
        self._closed = True
        self._draining = True
        for timer in (self._wait_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        for task in (self._scheduler, self._supervisor):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._scheduler, self._supervisor):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        for p in Priority:
            while self._queues[p]:
                job = self._queues[p].popleft()
                if self._unqueue(job) and not job.future.done():
                    job.future.set_exception(DrainingError("service is shutting down"))
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until nothing is queued or running (tests: run until the queues are empty)."""
        await self._idle.wait()

    async def _wait_no_queued(self) -> None:
        while self._queued_total > 0 or self._in_flight:
            await self._idle.wait()
            if self._queued_total == 0 and not self._in_flight:
                return

    # -- intake ------------------------------------------------------------------

    def queue_depth(self, priority: Priority) -> int:
        return self._queued_items[priority]

    @property
    def in_flight_batches(self) -> int:
        return len(self._in_flight)

    def estimated_wait_s(self, priority: Priority) -> float | None:
        """Time to serve what is ahead of a new job of this class, from measured throughput."""
        if self._throughput is None or self._throughput <= 0:
            return None
        queued = self._queued_items
        ahead = 0
        for p in _AT_OR_ABOVE[priority]:
            ahead += queued[p]
        return (ahead + self._in_flight_items) / self._throughput

    def _admit(self, priority: Priority, size: int, deadline_s: float) -> None:
        if self._draining:
            raise DrainingError("service is shutting down", retry_after_s=1.0)
        queued = self._queued_items[priority]
        bound = self._policies[priority].queue_bound
        if queued > 0 and queued + size > bound:
            self._count_shed(priority)
            raise OverloadedError(
                f"{priority.label} queue is full ({queued} queued)",
                retry_after_s=self._retry_after(priority),
            )
        if self._queued_total > 0 and self._queued_total + size > self._shed_limit[priority]:
            self._count_shed(priority)
            raise OverloadedError(
                f"backlog too large for {priority.label} traffic ({self._queued_total} queued)",
                retry_after_s=self._retry_after(priority),
            )
        wait = self.estimated_wait_s(priority)
        if wait is not None and wait > deadline_s:
            self._count_shed(priority)
            raise OverloadedError(
                f"estimated wait {wait * 1000:.0f} ms exceeds the {priority.label} deadline",
                retry_after_s=wait,
            )

    def _count_shed(self, priority: Priority) -> None:
        self.stats.shed[priority] += 1
        if self._observer is not None:
            self._observer.shed_one(priority.label)

    def _retry_after(self, priority: Priority) -> float:
        wait = self.estimated_wait_s(priority)
        return 1.0 if wait is None else max(1.0, wait)

    async def submit(
        self, payload: P, *, priority: Priority, size: int = 1, timeout_s: float | None = None
    ) -> R:
        """Queue a job and wait for its result.

        ``timeout_s`` may shorten the class deadline, never lengthen it.
        Raises OverloadedError / DrainingError at once when refused,
        DeadlineExceededError if the deadline passes while queued.
        """
        if self._closed:
            raise DrainingError("dispatcher is closed")
        if size < 1:
            raise ValueError("size must be >= 1")
        deadline_s = self._policies[priority].deadline_s
        if timeout_s is not None:
            deadline_s = min(deadline_s, timeout_s)
        self._admit(priority, size, deadline_s)

        now = self._clock.now()
        loop = asyncio.get_running_loop()
        job: Job[P, R] = Job(
            payload=payload,
            size=size,
            priority=priority,
            enqueued_at=now,
            deadline=now + deadline_s,
            future=loop.create_future(),
            request_id=REQUEST_ID.get(),
        )
        heapq.heappush(self._deadlines, (job.deadline, next(self._deadline_seq), job))
        if self._deadline_timer_at is None or job.deadline < self._deadline_timer_at:
            self._arm_deadline_timer(job.deadline)
        self._queues[priority].append(job)
        self._queued_items[priority] += size
        self._queued_total += size
        self.stats.submitted[priority] += 1
        self._idle.clear()
        self._kick()
        try:
            return await job.future
        except asyncio.CancelledError:
            # The caller went away: drop the job if it has not been dispatched yet.
            # A batch already running finishes; its result is simply not delivered.
            self._unqueue(job)
            raise

    def _unqueue(self, job: Job[P, R]) -> bool:
        """Take a job out of the queue counters (it stays in the deque until popped)."""
        if not job.queued:
            return False
        job.queued = False
        self._queued_items[job.priority] -= job.size
        self._queued_total -= job.size
        self._check_idle()
        return True

    def _arm_deadline_timer(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer_at = when
        self._deadline_timer = self._clock.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        self._deadline_timer_at = None
        now = self._clock.now()
        heap = self._deadlines
        while heap and (heap[0][0] <= now or not heap[0][2].queued):
            _, _, job = heapq.heappop(heap)
            self._expire(job)
        if heap:
            self._arm_deadline_timer(heap[0][0])

    def _earliest_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _expire(self, job: Job[P, R]) -> None:
        if not self._unqueue(job):
            return
        self.stats.expired[job.priority] += 1
        if self._observer is not None:
            self._observer.expired_one(job.priority.label)
        if not job.future.done():
            job.future.set_exception(
                DeadlineExceededError(
                    f"deadline passed after {(job.deadline - job.enqueued_at) * 1000:.0f} ms"
                    " in the queue",
                    retry_after_s=self._retry_after(job.priority),
                )
            )

    def _check_idle(self) -> None:
        if self._queued_total == 0 and not self._in_flight:
            self._idle.set()

    def _kick(self) -> None:
        self._wakeup.set()

    # -- batching ----------------------------------------------------------------

    def _oldest_queued(self) -> Job[P, R] | None:
        oldest: Job[P, R] | None = None
        for p in _CLASSES:
            q = self._queues[p]
            while q and not q[0].queued:
                q.popleft()
            if q and (oldest is None or q[0].enqueued_at < oldest.enqueued_at):
                oldest = q[0]
        return oldest

    def _ready_at(self) -> float | None:
        """When the next batch should leave: now-ish, a later time, or None (nothing queued).

        Waiting lets a batch grow, which only pays while another batch is
        running: an idle pipeline sends at once. Otherwise the wait ends at
        ``max_wait_s`` after the oldest job, or earlier if the estimated cost
        of the batch would then carry any queued job past its deadline.
        """
        oldest = self._oldest_queued()
        if oldest is None:
            return None
        now = self._clock.now()
        if (
            self._draining
            or not self._in_flight
            or self._queued_total >= self._max_batch_size
            or self._queued_items[Priority.CRITICAL] > 0
            or self._max_wait_s == 0
        ):
            return now
        ready = oldest.enqueued_at + self._max_wait_s
        earliest = self._earliest_deadline()
        if earliest is not None:
            slack = earliest - self.cost.estimate(self._queued_total) - _DEADLINE_MARGIN_S
            ready = min(ready, slack)
        return ready

    def _next_job(self, now: float) -> Job[P, R] | None:
        aged: Job[P, R] | None = None
        for p in _CLASSES:
            q = self._queues[p]
            while q and not q[0].queued:
                q.popleft()
            if q and p is not Priority.CRITICAL and now - q[0].enqueued_at >= self._ageing_s:
                if aged is None or q[0].enqueued_at < aged.enqueued_at:
                    aged = q[0]
        if aged is not None:
            return aged
        for p in _CLASSES:
            if self._queues[p]:
                return self._queues[p][0]
        return None

    def _batch_cap(self, now: float) -> int:
        """Largest batch whose estimated cost leaves the most urgent job half its time."""
        earliest = self._earliest_deadline()
        if earliest is None or self.cost.observed == 0:
            return self._max_batch_size
        return self.cost.largest_within((earliest - now) / 2, self._max_batch_size)

    def _take_batch(self) -> list[Job[P, R]]:
        now = self._clock.now()
        cap = self._batch_cap(now)
        batch: list[Job[P, R]] = []
        items = 0
        while True:
            job = self._next_job(now)
            if job is None:
                break
            if batch and items + job.size > cap:
                break
            self._queues[job.priority].popleft()
            self._unqueue(job)
            if job.future.done():  # expired or cancelled meanwhile
                continue
            job.dispatched_at = now
            if self._observer is not None:
                self._observer.observe_queue_wait(job.priority.label, now - job.enqueued_at)
            batch.append(job)
            items += job.size
            if items >= cap:
                break
        for job in batch:
            job.batch_size = items
        return batch

    async def _schedule(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while len(self._in_flight) < self._max_in_flight:
                ready_at = self._ready_at()
                if ready_at is None:
                    break
                if ready_at > self._clock.now():
                    self._arm_wait_timer(ready_at)
                    break
                batch = self._take_batch()
                if not batch:
                    continue
                self._launch(batch)

    def _arm_wait_timer(self, when: float) -> None:
        if self._wait_timer_at is not None and self._wait_timer_at <= when:
            return
        if self._wait_timer is not None:
            self._wait_timer.cancel()
        self._wait_timer_at = when

        def fire() -> None:
            self._wait_timer = None
            self._wait_timer_at = None
            self._kick()

        self._wait_timer = self._clock.call_at(when, fire)

    def _launch(self, batch: list[Job[P, R]]) -> None:
        items = sum(j.size for j in batch)
        self._in_flight_items += items
        self._idle.clear()
        task = asyncio.create_task(self._run_batch(batch, items))
        self._in_flight.add(task)

        def reap(t: asyncio.Task[None]) -> None:
            self._in_flight.discard(t)
            self._in_flight_items -= items
            if not t.cancelled() and t.exception() is not None:
                log.error("batch task failed unexpectedly", exc_info=t.exception())
            self._check_idle()
            self._kick()

        task.add_done_callback(reap)

    async def _run_batch(self, batch: list[Job[P, R]], items: int) -> None:
        started = self._clock.now()
        self.stats.batches += 1
        self.stats.batch_items += items
        try:
            results = await self._handler(batch)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch handler returned {len(results)} results for {len(batch)} jobs"
                )
        except asyncio.CancelledError:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(DrainingError("batch cancelled at shutdown"))
            raise
        except Exception as exc:
            self.stats.handler_errors += 1
            log.exception(
                "batch handler failed; failing its %d jobs",
                len(batch),
                extra={"request_ids": [job.request_id for job in batch]},
            )
            for job in batch:
                self.stats.failed[job.priority] += 1
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._observe(items, self._clock.now() - started)
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self.stats.failed[job.priority] += 1
                if not job.future.done():
                    job.future.set_exception(result)
            else:
                self.stats.completed[job.priority] += 1
                if not job.future.done():
                    job.future.set_result(result)

    def _observe(self, items: int, elapsed_s: float) -> None:
        if elapsed_s <= 0 or not math.isfinite(elapsed_s):
            return
        self.cost.observe(items, elapsed_s)
        rate = items * self._max_in_flight / elapsed_s
        if self._throughput is None:
            self._throughput = rate
        else:
            self._throughput += _THROUGHPUT_ALPHA * (rate - self._throughput)

    def snapshot(self) -> dict[str, Any]:
        """Queue depths and counters, for health and metrics."""
        return {
            "queued": {p.label: self._queued_items[p] for p in Priority},
            "in_flight_batches": len(self._in_flight),
            "throughput_tx_per_s": self._throughput,
            "draining": self._draining,
        }
