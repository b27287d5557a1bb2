"""The dispatcher, driven by an injected handler and a manual clock (no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from sankofa.errors import DeadlineExceededError, DrainingError, OverloadedError
from sankofa.logs import REQUEST_ID
from sankofa.queues.clock import ManualClock
from sankofa.queues.dispatcher import ClassPolicy, Dispatcher, Job
from sankofa.queues.priority import Priority

C, H, N, L = Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW


class Recorder:
    """A batch handler that records batches and can be held shut."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_when: Any = None

    async def __call__(self, jobs: Sequence[Job[Any, Any]]) -> list[Any]:
        self.batches.append([j.payload for j in jobs])
        await self.gate.wait()
        if self.fail_when is not None and any(self.fail_when(j.payload) for j in jobs):
            raise RuntimeError("handler failed")
        return [("done", j.payload) for j in jobs]

    @property
    def served(self) -> list[Any]:
        return [p for b in self.batches for p in b]


def make(
    handler: Recorder,
    clock: ManualClock,
    *,
    bound: int = 100,
    deadline_s: float = 10.0,
    max_batch_size: int = 4,
    max_wait_s: float = 0.0,
    max_in_flight: int = 1,
    ageing_s: float = 1.0,
    bounds: dict[Priority, int] | None = None,
) -> Dispatcher[Any, Any]:
    policies = {p: ClassPolicy((bounds or {}).get(p, bound), deadline_s) for p in Priority}
    return Dispatcher(
        handler=handler,
        policies=policies,
        max_batch_size=max_batch_size,
        max_wait_s=max_wait_s,
        max_in_flight=max_in_flight,
        ageing_s=ageing_s,
        clock=clock,
    )


async def settle(rounds: int = 20) -> None:
    """Let ready tasks run (yields to the loop; never waits on wall time)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


async def submit_all(
    d: Dispatcher[Any, Any], items: list[tuple[Any, Priority]]
) -> list[asyncio.Task[Any]]:
    tasks = [asyncio.create_task(d.submit(p, priority=pr)) for p, pr in items]
    await settle()
    return tasks


async def test_fifo_within_a_class(handler: Recorder, clock: ManualClock) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1)
    await d.start()
    tasks = await submit_all(d, [(i, N) for i in range(10)])
    handler.gate.set()
    await asyncio.gather(*tasks)
    assert handler.served == list(range(10))
    await d.close()


async def test_strict_priority_between_classes(handler: Recorder, clock: ManualClock) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1)
    await d.start()
    # The first item occupies the only worker; the rest queue up in mixed order.
    tasks = await submit_all(d, [("first", L)])
    tasks += await submit_all(d, [("l1", L), ("n1", N), ("h1", H), ("c1", C), ("n2", N), ("c2", C)])
    handler.gate.set()
    await asyncio.gather(*tasks)
    assert handler.served == ["first", "c1", "c2", "h1", "n1", "n2", "l1"]
    await d.close()


async def test_uncomparable_payloads_of_equal_priority_are_served_in_order(
    handler: Recorder, clock: ManualClock
) -> None:
    """C1: dict payloads cannot be ordered; the dispatcher must never compare them."""
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1)
    await d.start()
    a, b, c = {"x": 1}, {"x": 2}, object()
    tasks = await submit_all(d, [(a, N), (b, N), (c, N)])
    handler.gate.set()
    results = await asyncio.gather(*tasks)
    assert handler.served == [a, b, c]
    assert [r[1] for r in results] == [a, b, c]
    await d.close()


async def test_ageing_bound_under_a_steady_critical_stream(clock: ManualClock) -> None:
    """C2: a low item is served once it has waited ageing_s, whatever critical traffic does."""
    permits = asyncio.Semaphore(0)
    served: list[Any] = []

    async def one_at_a_time(jobs: Sequence[Job[Any, Any]]) -> list[Any]:
        await permits.acquire()
        served.extend(j.payload for j in jobs)
        return [None for _ in jobs]

    d = Dispatcher(
        handler=one_at_a_time,
        policies={p: ClassPolicy(1000, 100.0) for p in Priority},
        max_batch_size=1,
        max_wait_s=0.0,
        max_in_flight=1,
        ageing_s=1.0,
        clock=clock,
    )
    await d.start()
    pending = await submit_all(d, [("c-0", C), ("low", L)])
    served_low_at = None
    for step in range(1, 40):
        # Two new critical items per 0.1 s while the worker serves one: critical
        # traffic alone exceeds capacity, yet the low item must get through.
        pending += await submit_all(d, [(f"c-{step}a", C), (f"c-{step}b", C)])
        clock.advance(0.1)
        permits.release()
        await settle()
        if "low" in served and served_low_at is None:
            served_low_at = step * 0.1
    assert served_low_at is not None
    # Served at the first free slot after waiting 1.0 s (one slot = 0.1 s here).
    assert 1.0 <= served_low_at <= 1.0 + 0.1 + 1e-9
    assert served.index("low") < len(served) - 1  # critical kept flowing after it
    for _ in range(200):
        permits.release()
    await asyncio.gather(*pending)
    await d.close()


async def test_low_item_gets_504_at_its_deadline_if_ageing_is_longer(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1, ageing_s=50.0, deadline_s=2.0)
    await d.start()
    tasks = await submit_all(d, [("busy", C), ("low", L)])
    clock.advance(2.0)
    await settle()
    with pytest.raises(DeadlineExceededError):
        await tasks[1]
    handler.gate.set()
    await tasks[0]
    assert "low" not in handler.served  # never scored
    assert d.stats.expired[L] == 1
    await d.close()


async def test_deadline_enforced_on_a_timer_while_the_worker_is_busy(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1, deadline_s=0.5)
    await d.start()
    tasks = await submit_all(d, [("busy", N), ("waits", N)])
    clock.advance(0.5)  # the worker is still busy: the timer alone must answer
    await settle()
    assert tasks[1].done()
    with pytest.raises(DeadlineExceededError):
        tasks[1].result()
    assert d.queue_depth(N) == 0
    handler.gate.set()
    await tasks[0]
    await d.close()


async def test_request_timeout_shortens_but_never_lengthens(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1, deadline_s=1.0)
    await d.start()
    busy = asyncio.create_task(d.submit("busy", priority=N))
    short = asyncio.create_task(d.submit("short", priority=N, timeout_s=0.1))
    long = asyncio.create_task(d.submit("long", priority=N, timeout_s=60.0))
    await settle()
    clock.advance(0.1)
    await settle()
    assert short.done() and isinstance(short.exception(), DeadlineExceededError)
    assert not long.done()
    clock.advance(0.9)
    await settle()
    assert long.done() and isinstance(long.exception(), DeadlineExceededError)
    handler.gate.set()
    await busy
    await d.close()


async def busy_pipeline(d: Dispatcher[Any, Any], handler: Recorder) -> asyncio.Task[Any]:
    """Occupy one of the two batch slots, so that a new batch may wait to grow."""
    handler.gate.clear()
    task = asyncio.create_task(d.submit("busy", priority=N))
    await settle()
    assert handler.batches == [["busy"]]
    return task


async def test_idle_pipeline_sends_at_once(handler: Recorder, clock: ManualClock) -> None:
    d = make(handler, clock, max_batch_size=100, max_wait_s=5.0, max_in_flight=2)
    await d.start()
    assert await d.submit("alone", priority=N) == ("done", "alone")  # no clock advance needed
    await d.close()


async def test_critical_never_waits_for_a_batch_to_fill(
    handler: Recorder, clock: ManualClock
) -> None:
    d = make(handler, clock, max_batch_size=100, max_wait_s=5.0, max_in_flight=2)
    await d.start()
    busy = await busy_pipeline(d, handler)
    normal = asyncio.create_task(d.submit("n", priority=N))
    await settle()
    assert handler.batches == [["busy"]]  # waiting up to max_wait for more
    crit = asyncio.create_task(d.submit("c", priority=C))
    await settle()
    assert handler.batches == [["busy"], ["c", "n"]]  # left at once, taking what was queued
    handler.gate.set()
    assert await crit == ("done", "c")
    await asyncio.gather(normal, busy)
    await d.close()


async def test_max_wait_counted_from_the_first_item(handler: Recorder, clock: ManualClock) -> None:
    d = make(handler, clock, max_batch_size=100, max_wait_s=0.010, max_in_flight=2)
    await d.start()
    busy = await busy_pipeline(d, handler)
    first = asyncio.create_task(d.submit("a", priority=N))
    await settle()
    clock.advance(0.006)
    second = asyncio.create_task(d.submit("b", priority=N))
    await settle()
    clock.advance(0.003)
    await settle()
    assert handler.batches == [["busy"]]
    clock.advance(0.001)  # 10 ms after the first item
    await settle()
    assert handler.batches == [["busy"], ["a", "b"]]
    handler.gate.set()
    await asyncio.gather(first, second, busy)
    await d.close()


async def test_wait_ends_early_when_the_deadline_needs_it(
    handler: Recorder, clock: ManualClock
) -> None:
    """The wait stops when the estimated batch cost would carry a job past its deadline."""
    d = make(handler, clock, max_batch_size=100, max_wait_s=10.0, max_in_flight=2, deadline_s=1.0)
    for _ in range(10):  # teach the cost model: a batch costs 0.2 s
        d.cost.observe(1, 0.2)
    await d.start()
    busy = await busy_pipeline(d, handler)
    job = asyncio.create_task(d.submit("urgent-ish", priority=N))
    await settle()
    clock.advance(0.7)
    await settle()
    assert handler.batches == [["busy"]]
    clock.advance(0.1)  # 1.0 - 0.2 (cost) - 0.005 (margin) = 0.795 s after submission
    await settle()
    assert handler.batches == [["busy"], ["urgent-ish"]]
    handler.gate.set()
    await asyncio.gather(job, busy)
    await d.close()


async def test_batch_size_capped_by_the_most_urgent_deadline(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=100, max_in_flight=1, deadline_s=1.0)
    for n in (10, 20, 40, 80):  # 10 ms per transaction
        d.cost.observe(n, 0.01 * n)
    await d.start()
    busy = asyncio.create_task(d.submit("busy", priority=N))
    await settle()
    jobs = await submit_all(d, [(i, N) for i in range(100)])
    handler.gate.set()
    await asyncio.gather(busy, *jobs)
    # Half of the 1 s deadline at 10 ms each: about 50 per batch, never 100.
    assert 45 <= max(len(b) for b in handler.batches) <= 50
    await d.close()


async def test_full_batch_leaves_without_waiting(handler: Recorder, clock: ManualClock) -> None:
    d = make(handler, clock, max_batch_size=3, max_wait_s=5.0)
    await d.start()
    tasks = await submit_all(d, [(i, N) for i in range(3)])
    await asyncio.gather(*tasks)
    assert handler.batches == [[0, 1, 2]]
    await d.close()


async def test_shedding_order_low_first_critical_last(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    # Total capacity 400: low shed past 200 queued, normal past 300, high past 360.
    d = make(handler, clock, bound=100, max_batch_size=1)
    await d.start()
    tasks = await submit_all(d, [("busy", C)])
    tasks += await submit_all(d, [(f"n{i}", N) for i in range(100)])
    tasks += await submit_all(d, [(f"h{i}", H) for i in range(100)])
    # 200 queued: low is refused, normal and high still fit their share...
    with pytest.raises(OverloadedError):
        await d.submit("low", priority=L)
    tasks += await submit_all(d, [(f"c{i}", C) for i in range(100)])
    # 300 queued: normal is now past its share too; critical still has room in its queue? no:
    with pytest.raises(OverloadedError):
        await d.submit("n-more", priority=N)
    with pytest.raises(OverloadedError):  # critical's own queue holds 100: full
        await d.submit("c-more", priority=C)
    assert d.stats.shed[L] == 1 and d.stats.shed[N] == 1 and d.stats.shed[C] == 1
    handler.gate.set()
    await asyncio.gather(*tasks)
    await d.close()


async def test_high_still_admitted_when_low_and_normal_are_shed(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, bound=100, max_batch_size=1)
    await d.start()
    tasks = await submit_all(d, [("busy", C)])
    tasks += await submit_all(d, [(f"l{i}", L) for i in range(100)])
    tasks += await submit_all(d, [(f"n{i}", N) for i in range(100)])
    tasks += await submit_all(d, [(f"c{i}", C) for i in range(100)])
    with pytest.raises(OverloadedError):
        await d.submit("l", priority=L)
    with pytest.raises(OverloadedError):
        await d.submit("n", priority=N)
    high = asyncio.create_task(d.submit("h", priority=H))
    await settle()
    assert not high.done()  # admitted and queued
    handler.gate.set()
    await asyncio.gather(*tasks, high)
    await d.close()


async def test_overloaded_carries_retry_after(handler: Recorder, clock: ManualClock) -> None:
    handler.gate.clear()
    d = make(handler, clock, bounds={L: 1}, max_batch_size=1)
    await d.start()
    tasks = await submit_all(d, [("busy", N), ("l1", L)])
    with pytest.raises(OverloadedError) as info:
        await d.submit("l2", priority=L)
    assert info.value.retry_after_s >= 1.0
    handler.gate.set()
    await asyncio.gather(*tasks)
    await d.close()


async def test_a_failing_batch_fails_only_its_own_requests(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.fail_when = lambda p: p == "bad"
    d = make(handler, clock, max_batch_size=1)
    await d.start()
    tasks = [asyncio.create_task(d.submit(p, priority=N)) for p in ("a", "bad", "b")]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == ("done", "a")
    assert isinstance(results[1], RuntimeError)
    assert results[2] == ("done", "b")
    assert d.running
    assert await d.submit("after", priority=C) == ("done", "after")
    await d.close()


async def test_a_failing_batch_logs_the_ids_of_the_requests_it_fails(
    handler: Recorder, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch runs in a task of its own, outside any request: its error line names
    the requests by the ids their edge set when they were submitted."""
    handler.gate.clear()
    handler.fail_when = lambda p: True
    d = make(handler, clock, max_batch_size=2)
    await d.start()

    async def submit_as(request_id: str, payload: str) -> Any:
        REQUEST_ID.set(request_id)  # this task's own context, as the edge does
        return await d.submit(payload, priority=N)

    tasks = [asyncio.create_task(submit_as(f"req-{p}", p)) for p in ("a", "b")]
    await settle()
    handler.gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in caplog.records if r.getMessage().startswith("batch handler failed")]
    assert [r.request_ids for r in failed] == [["req-a", "req-b"]]  # type: ignore[attr-defined]
    await d.close()


async def test_drain_serves_queued_work_then_refuses(handler: Recorder, clock: ManualClock) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=2, max_wait_s=60.0)
    await d.start()
    tasks = await submit_all(d, [(i, N) for i in range(5)])
    drain = asyncio.create_task(d.drain(grace_s=30.0))
    await settle()
    with pytest.raises(DrainingError):
        await d.submit("late", priority=C)
    handler.gate.set()
    left = await drain
    assert left == 0
    assert [t.result() for t in tasks] == [("done", i) for i in range(5)]
    assert not d.running


async def test_drain_answers_what_is_left_at_the_grace_deadline(handler: Recorder) -> None:
    handler.gate.clear()
    from sankofa.queues.clock import LoopClock

    d = make(handler, LoopClock(), max_batch_size=1)  # type: ignore[arg-type]
    await d.start()
    tasks = [asyncio.create_task(d.submit(i, priority=N)) for i in range(4)]
    await settle()
    drain = asyncio.create_task(d.drain(grace_s=0.05))
    await asyncio.sleep(0.1)  # the grace period itself is wall time here
    handler.gate.set()
    left = await drain
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == ("done", 0)  # in flight: finished, never cut mid-commit
    assert left == 3
    assert all(isinstance(r, DrainingError) for r in results[1:])


async def test_cancelled_request_is_dropped_before_dispatch(
    handler: Recorder, clock: ManualClock
) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=1)
    await d.start()
    tasks = await submit_all(d, [("busy", N), ("gone", N), ("kept", N)])
    tasks[1].cancel()
    await settle()
    assert d.queue_depth(N) == 1
    handler.gate.set()
    await asyncio.gather(tasks[0], tasks[2])
    assert "gone" not in handler.served
    await d.close()


async def test_sizes_count_transactions_not_requests(handler: Recorder, clock: ManualClock) -> None:
    handler.gate.clear()
    d = make(handler, clock, max_batch_size=10)
    await d.start()
    busy = asyncio.create_task(d.submit("busy", priority=C))
    await settle()
    big = [asyncio.create_task(d.submit(f"b{i}", priority=N, size=6)) for i in range(3)]
    await settle()
    assert d.queue_depth(N) == 18
    handler.gate.set()
    await asyncio.gather(busy, *big)
    # 6 + 6 > 10: each 6-transaction job goes in its own batch.
    assert handler.batches[1:] == [["b0"], ["b1"], ["b2"]]
    await d.close()


def test_constructor_checks_its_arguments() -> None:
    async def h(jobs: Sequence[Job[Any, Any]]) -> list[Any]:
        return []

    policies = {p: ClassPolicy(10, 1.0) for p in Priority}
    with pytest.raises(ValueError, match="max_batch_size"):
        Dispatcher(
            handler=h,
            policies=policies,
            max_batch_size=0,
            max_wait_s=0,
            max_in_flight=1,
            ageing_s=1,
        )
    with pytest.raises(ValueError, match="policies"):
        Dispatcher(
            handler=h,
            policies={C: ClassPolicy(1, 1)},
            max_batch_size=1,
            max_wait_s=0,
            max_in_flight=1,
            ageing_s=1,
        )
    with pytest.raises(ValueError, match="queue_bound"):
        ClassPolicy(0, 1.0)
