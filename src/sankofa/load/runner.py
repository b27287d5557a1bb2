"""Runs a load test: plans it, starts the worker processes, starts them together, merges.

Order of a run:

1. plan every request (intended time, priority, transactions) from the seed;
2. spawn the workers; each builds its request bytes and opens its connections;
3. once all are ready, start resource sampling and send the common start
   instant (a little ahead, so every worker is waiting for it);
4. print a progress line a second; the run ends by itself (the schedule is
   finite and every request has a deadline), and a hard deadline past that
   stops a worker that would not;
5. merge the workers' per-request arrays into one run, in plan order.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from sankofa.load.constants import (
    AUTO_CONNECTIONS_LATENCY_S,
    AUTO_CONNECTIONS_MAX,
    AUTO_CONNECTIONS_MIN,
    CLOSED_LOOP_MAX_RPS,
    DEFAULT_UTC_OFFSET,
    SETUP_TIMEOUT_S,
    START_MARGIN_S,
)
from sankofa.load.errors import LoadTestSetupError, WorkerFailedError
from sankofa.load.histogram import LatencyHistogram
from sankofa.load.payloads import TxColumns, check_run_id, check_utc_offset
from sankofa.load.plan import Arrival, Plan, make_plan, pass_shift_s, select_rows
from sankofa.load.sampler import GroupSeries, GroupSpec, ResourceSampler, psutil_available
from sankofa.load.worker import Progress, ReadyInfo, WorkerResult, WorkerSpec, worker_main

#: Extra time past the last deadline before a worker is told to stop, then killed.
_GRACE_S = 15.0


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One load test. ``rate=None`` is a closed loop (for the generator's ceiling only)."""

    url: str
    path: str
    rate: float | None
    duration_s: float
    mix: npt.NDArray[np.float64]
    run_id: str
    label: str = "run"
    warmup_s: float = 0.0
    arrival: Arrival = "constant"
    connections: int | None = None
    processes: int = 1
    batch: int = 1
    timeout_s: float = 10.0
    seed: int = 0
    input_path: Path | None = None
    start_row: int = 0
    utc_offset: str = DEFAULT_UTC_OFFSET
    #: Every k-th transaction (by id) sent as a PIX; 0: all card payments.
    pix_every: int = 0
    fixed_body: bytes | None = None
    sample: tuple[GroupSpec, ...] = ()
    sample_generator: bool = True
    use_uvloop: bool = True
    #: The Authorization header value every request carries (a bearer token), or None.
    authorization: str | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a finite number > 0")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError("duration_s must be a finite number > 0")
        if not self.warmup_s >= 0:
            raise ValueError("warmup_s must be >= 0")
        if self.processes < 1:
            raise ValueError("processes must be >= 1")
        if self.connections is not None and self.connections < self.processes:
            raise ValueError("connections must be >= processes (each process needs one)")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if self.rate is None and self.fixed_body is None:
            raise ValueError("a closed loop sends fixed_body")
        check_run_id(self.run_id)
        check_utc_offset(self.utc_offset)
        if self.pix_every < 0:
            raise ValueError("pix_every must be >= 0")

    @property
    def closed_loop(self) -> bool:
        return self.rate is None

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.duration_s

    def connections_total(self) -> int:
        """Given, or enough for AUTO_CONNECTIONS_LATENCY_S of latency at the offered rate."""
        if self.connections is not None:
            return self.connections
        if self.rate is None:
            return max(AUTO_CONNECTIONS_MIN, self.processes)
        wanted = math.ceil(self.rate * AUTO_CONNECTIONS_LATENCY_S)
        return max(min(wanted, AUTO_CONNECTIONS_MAX), AUTO_CONNECTIONS_MIN, self.processes)


@dataclass(slots=True)
class RunData:
    """A finished run: one entry per request, times in seconds from the start instant."""

    spec: RunSpec
    started_at: float  # wall clock (time.time()) of the start instant
    intended_s: npt.NDArray[np.float64]
    sent_s: npt.NDArray[np.float64]
    done_s: npt.NDArray[np.float64]
    status: npt.NDArray[np.int16]
    priority: npt.NDArray[np.int8]
    connections: int
    ready: list[ReadyInfo]
    workers: list[WorkerResult]
    resources: list[GroupSeries] = field(default_factory=list)
    resources_t0: float = 0.0  # monotonic start instant, to rebase the samples
    stopped_early: bool = False
    input_path: Path | None = None

    @property
    def retry_after(self) -> Counter[tuple[int, bool]]:
        total: Counter[tuple[int, bool]] = Counter()
        for w in self.workers:
            total.update(w.retry_after)
        return total


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal whole numbers (the first ones larger)."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def load_transactions(input_path: Path | None, n_tx: int, start_row: int = 0) -> TxColumns:
    """``n_tx`` transactions from the data, in time order, zero amounts skipped."""
    from sankofa.sim.data import load_raw

    if input_path is None:
        raise LoadTestSetupError("no input data: give --input (the handbook's raw .csv.gz)")
    raw = load_raw(input_path)
    rows, passes = select_rows(raw.amount_cents, n_tx, start_row)
    shift = pass_shift_s(raw.tx_datetime)
    return TxColumns(
        transaction_id=raw.transaction_id[rows],
        tx_datetime=raw.tx_datetime[rows] + passes * shift,
        customer_id=raw.customer_id[rows],
        terminal_id=raw.terminal_id[rows],
        amount_cents=raw.amount_cents[rows],
        passes=passes,
    )


def worker_specs(spec: RunSpec, plan: Plan | None, tx: TxColumns | None) -> list[WorkerSpec]:
    k_total = spec.processes
    conns = split_evenly(spec.connections_total(), k_total)
    out: list[WorkerSpec] = []
    for k in range(k_total):
        common: dict[str, Any] = {
            "index": k,
            "url": spec.url,
            "path": spec.path,
            "connections": conns[k],
            "timeout_s": spec.timeout_s,
            "fixed_body": spec.fixed_body,
            "batch": spec.batch,
            "run_id": spec.run_id,
            "utc_offset": spec.utc_offset,
            "pix_every": spec.pix_every,
            "use_uvloop": spec.use_uvloop,
            "authorization": spec.authorization,
        }
        if plan is None:
            capacity = int(CLOSED_LOOP_MAX_RPS * spec.duration_s) + 1
            out.append(
                WorkerSpec(mode="closed", duration_s=spec.duration_s, capacity=capacity, **common)
            )
            continue
        share = plan.share(k, k_total)
        worker_tx = None
        if tx is not None:
            rows = (share[:, None] * spec.batch + np.arange(spec.batch)).ravel()
            worker_tx = tx.take(rows)
        out.append(
            WorkerSpec(
                mode="open",
                offsets_s=plan.offsets_s[share],
                priority=plan.priority[share],
                tx=worker_tx,
                **common,
            )
        )
    return out


class _Live:
    """Merges the workers' progress snapshots and prints one line a second."""

    def __init__(self, stream: TextIO | None, plan: Plan | None, workers: int, warmup_s: float):
        self._stream = stream
        self._offsets = plan.offsets_s if plan is not None else None
        self._last: dict[int, Progress] = {}
        self._hist = LatencyHistogram()
        self._prev = (0, 0, 0)
        self._warmup_s = warmup_s
        self._workers = workers

    def add(self, p: Progress) -> None:
        self._last[p.worker] = p
        if p.latencies_us.size:
            self._hist.record(p.latencies_us)

    def reached(self, second: int, finished: set[int]) -> bool:
        """Whether every worker still running has sent a snapshot taken at ``second`` or later."""
        return all(
            k in finished or (k in self._last and self._last[k].at_s >= second)
            for k in range(self._workers)
        )

    def totals(self) -> tuple[int, int, int, int]:
        ps = self._last.values()
        return (
            sum(p.sent for p in ps),
            sum(p.finished for p in ps),
            sum(p.ok for p in ps),
            sum(p.errors for p in ps),
        )

    def print_line(self, elapsed_s: float) -> None:
        if self._stream is None:
            return
        sent, finished, _ok, errors = self.totals()
        if self._offsets is not None:
            offered = int(np.searchsorted(self._offsets, elapsed_s))
        else:
            offered = sent
        prev_offered, prev_finished, prev_errors = self._prev
        self._prev = (offered, finished, errors)
        p99 = self._hist.value_at(0.99) / 1000.0
        phase = " warmup" if elapsed_s <= self._warmup_s else ""
        self._stream.write(
            f"[{elapsed_s:5.0f}s]{phase} offered {offered - prev_offered:>7,}/s"
            f"  completed {finished - prev_finished:>7,}/s"
            f"  errors {errors - prev_errors:>6,} (total {errors:,})"
            f"  p99 so far {p99:8.2f} ms\n"
        )
        self._stream.flush()


def run(spec: RunSpec, *, progress: TextIO | None = sys.stderr) -> RunData:
    """Run one load test to its end and return the merged per-request data."""
    plan: Plan | None = None
    tx: TxColumns | None = None
    if spec.rate is not None:
        plan = make_plan(
            rate=spec.rate,
            duration_s=spec.total_s,
            arrival=spec.arrival,
            mix=spec.mix,
            batch=spec.batch,
            seed=spec.seed,
        )
        if spec.fixed_body is None:
            tx = load_transactions(spec.input_path, plan.n_transactions, spec.start_row)
    specs = worker_specs(spec, plan, tx)
    ctx = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    pipes: list[Pipe] = []
    try:
        for ws in specs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child_end, ws), daemon=True)
            proc.start()
            child_end.close()
            procs.append(proc)
            pipes.append(parent_end)
        ready = _await_ready(pipes, procs)
        if all(r.connected == 0 for r in ready):
            errs = sorted({e for r in ready for e in r.connect_errors})
            raise LoadTestSetupError(f"cannot connect to {spec.url}: {'; '.join(errs)}")
        sampler = _start_sampler(spec, procs)
        try:
            t0 = time.monotonic() + START_MARGIN_S
            started_at = time.time() + START_MARGIN_S
            for pipe in pipes:
                pipe.send(("go", t0))
            results, stopped = _collect(spec, pipes, procs, plan, t0, progress)
        finally:
            resources = sampler.stop() if sampler is not None else []
    finally:
        # Closing the pipes tells a worker still running to stop (it reads EOF).
        for pipe in pipes:
            pipe.close()
        for worker in procs:
            worker.join(timeout=5.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return merge_results(spec, plan, results, ready, resources, t0, started_at, stopped)


def _await_ready(pipes: list[Pipe], procs: list[mp.process.BaseProcess]) -> list[ReadyInfo]:
    ready: dict[int, ReadyInfo] = {}
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while len(ready) < len(pipes):
        left = deadline - time.monotonic()
        if left <= 0:
            raise LoadTestSetupError(f"workers not ready within {SETUP_TIMEOUT_S:.0f} s")
        for k in _readable(pipes, procs, set(ready), left):
            kind, payload = _receive(pipes[k], k)
            if kind == "ready":
                ready[k] = payload
            else:
                raise WorkerFailedError(f"worker {k} sent {kind!r} before it was ready")
    return [ready[k] for k in range(len(pipes))]


def _readable(
    pipes: list[Pipe], procs: list[mp.process.BaseProcess], skip: set[int], timeout_s: float
) -> list[int]:
    """Indexes of the workers (not in ``skip``) with a message waiting, within ``timeout_s``.

    Also watches each process: one that died without a word (a crash while
    starting) raises at once instead of leaving the parent waiting.
    """
    by_pipe = {id(pipes[k]): k for k in range(len(pipes)) if k not in skip}
    by_sentinel = {procs[k].sentinel: k for k in by_pipe.values()}
    watched: list[Any] = [pipes[k] for k in by_pipe.values()] + list(by_sentinel)
    ready: set[int] = set()
    for obj in wait(watched, timeout=timeout_s):
        if isinstance(obj, int):
            k = by_sentinel[obj]
            if not pipes[k].poll():
                code = procs[k].exitcode
                raise WorkerFailedError(f"worker {k} exited (code {code}) without a result")
            ready.add(k)
        else:
            ready.add(by_pipe[id(obj)])
    return sorted(ready)


def _receive(pipe: Pipe, k: int) -> tuple[str, Any]:
    try:
        message = pipe.recv()
    except EOFError:
        raise WorkerFailedError(f"worker {k} exited without a word") from None
    if message[0] == "error":
        raise WorkerFailedError(f"worker {k} failed:\n{message[1]}")
    return message[0], message[1]


def _start_sampler(spec: RunSpec, procs: list[mp.process.BaseProcess]) -> ResourceSampler | None:
    groups = list(spec.sample)
    if spec.sample_generator and psutil_available():
        # The parent and its workers only: a server started by the caller may be a child too.
        pids = (os.getpid(), *(p.pid for p in procs if p.pid is not None))
        groups.append(GroupSpec(label="generator", pids=pids))
    if not groups:
        return None
    sampler = ResourceSampler(groups)
    sampler.start()
    return sampler


def _collect(
    spec: RunSpec,
    pipes: list[Pipe],
    procs: list[mp.process.BaseProcess],
    plan: Plan | None,
    t0: float,
    progress: TextIO | None,
) -> tuple[list[WorkerResult], bool]:
    live = _Live(progress, plan, len(pipes), spec.warmup_s)
    results: dict[int, WorkerResult] = {}
    # Every request ends by its intended time + timeout (the engine's deadline).
    hard_stop = t0 + spec.total_s + spec.timeout_s + _GRACE_S
    stopped = False
    next_line = t0 + 1.0
    while len(results) < len(pipes):
        now = time.monotonic()
        if now >= hard_stop:
            if stopped:
                raise WorkerFailedError("workers did not finish after being told to stop")
            stopped = True
            for k, pipe in enumerate(pipes):
                if k not in results:
                    pipe.send(("stop",))
            hard_stop = now + _GRACE_S
        wake = next_line if now < next_line else min(now + 0.05, next_line + 0.5)
        timeout = max(min(wake, hard_stop) - now, 0.0)
        for k in _readable(pipes, procs, set(results), timeout):
            kind, payload = _receive(pipes[k], k)
            if kind == "progress":
                live.add(payload)
            elif kind == "result":
                results[k] = payload
        now = time.monotonic()
        second = round(next_line - t0)
        # A line per second once every worker's snapshot for it is in (or late).
        if now >= next_line and (live.reached(second, set(results)) or now >= next_line + 0.5):
            live.print_line(second)
            next_line += 1.0
    return [results[k] for k in range(len(pipes))], stopped


def merge_results(
    spec: RunSpec,
    plan: Plan | None,
    results: list[WorkerResult],
    ready: list[ReadyInfo],
    resources: list[GroupSeries],
    t0: float,
    started_at: float,
    stopped: bool,
) -> RunData:
    """The workers' per-request arrays as one run, in plan order (exact: nothing is binned)."""
    k_total = len(results)
    if plan is not None and not stopped:
        # Back into plan order: worker k sent requests k, k + K, ...
        n = len(plan)
        intended = np.full(n, np.nan)
        sent = np.full(n, np.nan)
        done = np.full(n, np.nan)
        status = np.zeros(n, dtype=np.int16)
        for k, r in enumerate(results):
            share = plan.share(k, k_total)
            intended[share] = r.intended_s
            sent[share] = r.sent_s
            done[share] = r.done_s
            status[share] = r.status
        priority = plan.priority
    else:
        intended = np.concatenate([r.intended_s for r in results])
        sent = np.concatenate([r.sent_s for r in results])
        done = np.concatenate([r.done_s for r in results])
        status = np.concatenate([r.status for r in results])
        priority = np.concatenate([r.priority for r in results])
        order = np.argsort(intended, kind="stable")
        intended, sent, done = intended[order], sent[order], done[order]
        status, priority = status[order], priority[order]
    return RunData(
        spec=spec,
        started_at=started_at,
        intended_s=intended,
        sent_s=sent,
        done_s=done,
        status=status,
        priority=priority,
        connections=spec.connections_total(),
        ready=ready,
        workers=results,
        resources=resources,
        resources_t0=t0,
        stopped_early=stopped,
        input_path=spec.input_path,
    )
