"""One generator process: builds its payloads, connects, waits for the start, runs, reports.

The parent talks to it over a pipe:

* worker -> parent: ``("ready", ReadyInfo)``, then ``("progress", Progress)``
  once a second, then ``("result", WorkerResult)``; or ``("error", text)``.
* parent -> worker: ``("go", t0)`` with the common start instant (monotonic
  seconds), or ``("stop",)`` to end early (no new sends; answers in flight
  are still recorded).

Payload bytes are built here, not in the parent, so that K workers build
theirs in parallel and only compact column arrays cross the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sankofa.load import _loop
from sankofa.load.engine import ClosedLoop, OpenLoop
from sankofa.load.http import Connection, Target, build_request
from sankofa.load.payloads import TxColumns, request_payloads, transaction_bodies
from sankofa.queues.priority import PRIORITY_NAMES

#: Snapshots are small and frequent: a second's worth of work at once would
#: stall the loop for milliseconds at high rates and show up as send lag.
PROGRESS_INTERVAL_S = 0.25


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """Everything one worker needs; picklable.

    Open loop: ``offsets_s`` and ``priority`` are this worker's requests (from
    the start instant), ``tx`` their transactions (``batch`` per request) or
    ``fixed_body`` one body for all. Closed loop: ``duration_s`` and
    ``capacity``; every request carries ``fixed_body`` at ``normal`` priority.
    """

    index: int
    mode: Literal["open", "closed"]
    url: str
    path: str
    connections: int
    timeout_s: float
    connect_timeout_s: float = 5.0
    offsets_s: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    priority: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    tx: TxColumns | None = None
    fixed_body: bytes | None = None
    batch: int = 1
    run_id: str = "run"
    utc_offset: str = "-03:00"
    pix_every: int = 0
    duration_s: float = 0.0
    capacity: int = 0
    use_uvloop: bool = True
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    connected: int
    connect_errors: list[str]
    build_s: float
    payload_bytes: int


@dataclass(frozen=True, slots=True)
class Progress:
    """Counters so far, and the latencies (µs) of 2xx answers since the last snapshot.

    The parent, not the worker, turns latencies into a histogram: the worker's
    loop is the one that must not stall.
    """

    worker: int
    at_s: float  # seconds since the start instant (inf: the final snapshot)
    sent: int
    finished: int
    ok: int
    errors: int
    latencies_us: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """Per request (this worker's, in its order): times from the start instant, status."""

    worker: int
    intended_s: npt.NDArray[np.float64]
    sent_s: npt.NDArray[np.float64]
    done_s: npt.NDArray[np.float64]
    status: npt.NDArray[np.int16]
    priority: npt.NDArray[np.int8]
    wake_lateness_s: npt.NDArray[np.float64]
    n_waited: int
    max_waiting: int
    retry_after: Counter[tuple[int, bool]]
    cpu_s: float
    loop: str


def worker_main(pipe: Pipe, spec: WorkerSpec) -> None:
    """Process entry point (spawned): never raises, reports failures over the pipe."""
    # Ctrl-C goes to the whole process group: the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        started = time.perf_counter()
        payloads = build_payloads(spec)
        ready_extra = (time.perf_counter() - started, sum(len(p) for p in payloads))
        # The payload list is long-lived: keep the collector from walking it again and again.
        gc.collect()
        gc.freeze()
        result = _loop.run(_drive(pipe, spec, payloads, ready_extra), use_uvloop=spec.use_uvloop)
        pipe.send(("result", result))
    except BaseException:
        with contextlib.suppress(OSError):
            pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def build_payloads(spec: WorkerSpec) -> list[bytes]:
    """This worker's complete request bytes, in sending order."""
    target = Target.parse(spec.url)
    extra = () if spec.authorization is None else (("Authorization", spec.authorization),)
    if spec.fixed_body is not None:
        headers = (("Content-Type", "application/json"), ("X-Priority", "normal"), *extra)
        return [build_request(target, spec.path, spec.fixed_body, headers)]
    if spec.tx is None:
        raise ValueError("an open-loop worker needs tx or fixed_body")
    bodies = transaction_bodies(
        spec.tx, run_id=spec.run_id, utc_offset=spec.utc_offset, pix_every=spec.pix_every
    )
    return request_payloads(
        bodies,
        spec.priority,
        target=target,
        path=spec.path,
        batch=spec.batch,
        extra_headers=extra,
    )


def _add_pipe_reader(
    loop: asyncio.AbstractEventLoop, pipe: Pipe, callback: Callable[[], None]
) -> None:
    """Watch the pipe for reading, leaving it in blocking mode.

    uvloop (libuv's ``uv_poll_init``) makes a watched descriptor non-blocking;
    a large ``pipe.send`` (the result) would then fail half-way with EAGAIN and
    leave the parent a truncated message. ``recv`` only runs once readable.
    """
    loop.add_reader(pipe.fileno(), callback)
    os.set_blocking(pipe.fileno(), True)


async def _recv(pipe: Pipe) -> Any:
    """One message from the parent without blocking the loop."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = pipe.fileno()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    _add_pipe_reader(loop, pipe, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)
    return pipe.recv()


async def _drive(
    pipe: Pipe, spec: WorkerSpec, payloads: list[bytes], ready_extra: tuple[float, int]
) -> WorkerResult:
    loop = asyncio.get_running_loop()
    target = Target.parse(spec.url)
    conns = [
        Connection(
            host=target.host,
            port=target.port,
            connect_timeout_s=spec.connect_timeout_s,
            keep_body=False,
        )
        for _ in range(spec.connections)
    ]
    outcomes = await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    errors = sorted({f"{type(o).__name__}: {o}" for o in failed})
    pipe.send(("ready", ReadyInfo(len(conns) - len(failed), errors, *ready_extra)))
    message = await _recv(pipe)
    if message[0] != "go":
        for c in conns:
            c.close()
        return _empty_result(spec)
    t0 = float(message[1])
    cpu0 = time.process_time()
    clock = _loop.MonotonicClock(loop)
    finished: asyncio.Future[None] = loop.create_future()

    def on_finished() -> None:
        if not finished.done():
            finished.set_result(None)

    engine: OpenLoop | ClosedLoop
    if spec.mode == "open":
        engine = OpenLoop(
            clock=clock,
            channels=conns,
            payloads=payloads,
            intended=(spec.offsets_s + t0).tolist(),
            timeout_s=spec.timeout_s,
            on_finished=on_finished,
        )
        engine.start()
    else:
        engine = ClosedLoop(
            clock=clock,
            channels=conns,
            payloads=payloads,
            stop_at=t0 + spec.duration_s,
            capacity=spec.capacity,
            timeout_s=spec.timeout_s,
            on_finished=on_finished,
        )
        clock.call_at(t0, engine.start)

    reporter = _Reporter(pipe, spec.index, engine, clock, t0)
    reporter.arm()

    def on_parent() -> None:
        try:
            msg = pipe.recv()
        except (EOFError, OSError):
            msg = ("stop",)
        if msg[0] == "stop":
            loop.remove_reader(pipe.fileno())
            engine.stop()

    _add_pipe_reader(loop, pipe, on_parent)
    try:
        await finished
    finally:
        loop.remove_reader(pipe.fileno())
        if reporter.timer is not None:
            reporter.timer.cancel()
        for c in conns:
            c.close()
    reporter.send(final=True)
    cpu_s = time.process_time() - cpu0
    return _result(spec, engine, t0, cpu_s)


class _Reporter:
    """Sends a progress snapshot every PROGRESS_INTERVAL_S."""

    def __init__(
        self,
        pipe: Pipe,
        worker: int,
        engine: OpenLoop | ClosedLoop,
        clock: _loop.MonotonicClock,
        t0: float,
    ) -> None:
        self._pipe = pipe
        self._worker = worker
        self._engine = engine
        self._clock = clock
        self._t0 = t0
        self._reported = 0
        self._ticks = 0
        self.timer: Any = None

    def arm(self) -> None:
        self._ticks += 1
        self.timer = self._clock.call_at(self._t0 + self._ticks * PROGRESS_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        self.send()
        self.arm()

    def send(self, *, final: bool = False) -> None:
        e = self._engine
        n = e.n_finished
        order = np.frombuffer(e.finish_order, dtype=np.int64)[self._reported : n]
        self._reported = n
        status = np.frombuffer(e.status, dtype=np.int16)[order]
        ok = order[(status >= 200) & (status < 300)]
        done = np.frombuffer(e.done, dtype=np.float64)[ok]
        start = np.fmin(
            np.frombuffer(e.intended, dtype=np.float64)[ok],
            np.frombuffer(e.sent, dtype=np.float64)[ok],
        )
        latencies = ((done - start) * 1e6).astype(np.float32)
        # The scheduled instant, not the clock: a timer may fire a fraction of a millisecond early.
        at_s = math.inf if final else self._ticks * PROGRESS_INTERVAL_S
        snapshot = Progress(self._worker, at_s, e.n_sent, n, e.n_ok, e.n_errors, latencies)
        with contextlib.suppress(OSError):
            self._pipe.send(("progress", snapshot))


def _result(
    spec: WorkerSpec, engine: OpenLoop | ClosedLoop, t0: float, cpu_s: float
) -> WorkerResult:
    n = engine.n_requests
    if spec.mode == "open":
        priority = spec.priority[:n]
    else:
        priority = np.full(n, PRIORITY_NAMES.index("normal"), dtype=np.int8)
    return WorkerResult(
        worker=spec.index,
        intended_s=np.frombuffer(engine.intended, dtype=np.float64)[:n] - t0,
        sent_s=np.frombuffer(engine.sent, dtype=np.float64)[:n] - t0,
        done_s=np.frombuffer(engine.done, dtype=np.float64)[:n] - t0,
        status=np.frombuffer(engine.status, dtype=np.int16)[:n].copy(),
        priority=priority,
        wake_lateness_s=(
            np.frombuffer(engine.wake_lateness, dtype=np.float64).copy()
            if isinstance(engine, OpenLoop)
            else np.zeros(0)
        ),
        n_waited=engine.n_waited,
        max_waiting=engine.max_waiting,
        retry_after=engine.retry_after,
        cpu_s=cpu_s,
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
    )


def _empty_result(spec: WorkerSpec) -> WorkerResult:
    empty = np.zeros(0)
    return WorkerResult(
        worker=spec.index,
        intended_s=empty,
        sent_s=empty,
        done_s=empty,
        status=np.zeros(0, dtype=np.int16),
        priority=np.zeros(0, dtype=np.int8),
        wake_lateness_s=np.zeros(0),
        n_waited=0,
        max_waiting=0,
        retry_after=Counter(),
        cpu_s=0.0,
        loop="",
    )
