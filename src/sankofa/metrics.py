"""Prometheus metrics: what the service does, per route, priority class and batch.

One ``Metrics`` object per process, built by the lifespan with its own
registry (nothing at import time). With several worker processes, ``sankofa
serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the
workers start, every worker writes its values there, and ``/metrics`` (served
by any worker) adds them all up.

Cheap on the hot path: labelled children are bound once and reused, gauges
(queue depth, pool use) are sampled twice a second rather than on every change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from sankofa.engine import constants as C
from sankofa.queues.priority import PRIORITY_NAMES

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Latency buckets, seconds: fine below 50 ms where the targets are.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000)
ROUTES: Final = {
    ("POST", "/v1/transactions"): "/v1/transactions",
    ("POST", "/v1/transactions/batch"): "/v1/transactions/batch",
    ("POST", "/v1/labels"): "/v1/labels",
    ("GET", "/health/live"): "/health/live",
    ("GET", "/health/ready"): "/health/ready",
    ("GET", "/metrics"): "/metrics",
    ("POST", "/bench/bare"): "/bench/bare",
    ("POST", "/bench/naive"): "/bench/naive",
}
#: Where a route stores the request's priority class for the metrics middleware.
PRIORITY_SCOPE_KEY: Final = "sankofa.priority"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def route_of(method: str, path: str) -> str:
    known = ROUTES.get((method, path))
    if known is not None:
        return known
    if method == "GET" and path.startswith("/v1/transactions/"):
        return "/v1/transactions/{id}"
    return "other"


class Metrics:
    """Every metric the service exports, bound to one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sankofa_http_requests",
            "HTTP requests answered, by route, status and priority class",
            ["route", "status", "priority"],
            registry=r,
        )
        self.latency = Histogram(
            "sankofa_http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer",
            ["route", "priority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "sankofa_queue_depth",
            "Transactions waiting in the dispatcher, by priority class",
            ["priority"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.queue_wait = Histogram(
            "sankofa_queue_wait_seconds",
            "Time a request waited in its queue before its batch left",
            ["priority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sankofa_batch_size",
            "Transactions per batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "sankofa_batch_duration_seconds",
            "Time to score and commit a batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shed = Counter(
            "sankofa_shed", "Requests refused by admission control (503)", ["priority"], registry=r
        )
        self.gc_pause = Histogram(
            "sankofa_gc_pause_seconds",
            "Garbage-collector pauses of this worker, by generation (the event loop stops meanwhile)",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.door_shed = Counter(
            "sankofa_door_shed",
            "Requests refused at the door (also in sankofa_shed), by the signal that refused them",
            ["priority", "signal"],
            registry=r,
        )
        self.expired = Counter(
            "sankofa_expired",
            "Requests whose deadline passed in the queue (504)",
            ["priority"],
            registry=r,
        )
        self.decisions = Counter(
            "sankofa_decisions", "Decisions made (replays excluded)", ["decision"], registry=r
        )
        self.rule_hits = Counter(
            "sankofa_rule_hits",
            "Transactions a rule matched as they were judged (resubmitted ids are not"
            " judged again), by rule id and mode; outcome 'decided' counts the matches the"
            " rule itself decided (no hot list, limit, allow list or earlier rule came"
            " first), 'matched' every match",
            ["rule", "mode", "outcome"],
            registry=r,
        )
        self.batches = Counter("sankofa_batches", "Batches run", registry=r)
        self.redis_round_trips = Counter(
            "sankofa_redis_round_trips",
            "Feature-store round trips (one per batch; per master on a Redis Cluster)",
            registry=r,
        )
        self.db_transactions = Counter(
            "sankofa_db_transactions", "Database transactions (one per batch)", registry=r
        )
        self.degraded_decisions = Counter(
            "sankofa_degraded_decisions",
            "Decisions made on degraded online features (Redis down, or its histories"
            " incomplete until a rebuild), flagged FEATURES_DEGRADED",
            registry=r,
        )
        self.features_state = Gauge(
            "sankofa_features_state",
            "Online features: redis_available and histories_complete (1 yes, 0 no)",
            ["check"],
            registry=r,
        )
        self.feature_rebuilds = Counter(
            "sankofa_feature_rebuilds",
            "Rebuilds of the online features run by this process",
            registry=r,
        )
        self.outcome_unknown = Counter(
            "sankofa_outcome_unknown",
            "Transactions answered 503 outcome-unknown: written, commit not confirmed",
            registry=r,
        )
        self.db_pool_size = Gauge(
            "sankofa_db_pool_connections",
            "Connections in the database pool",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.db_pool_in_use = Gauge(
            "sankofa_db_pool_in_use",
            "Database connections in use",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.redis_pool_in_use = Gauge(
            "sankofa_redis_pool_in_use",
            "Redis connections in use",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.reads = Counter(
            "sankofa_db_reads",
            "Reads (GET endpoints) answered, by the server that answered: replica or primary",
            ["server"],
            registry=r,
        )
        self.replica_fallbacks = Counter(
            "sankofa_replica_fallbacks",
            "Reads sent to the primary although a replica is configured: not_found (the"
            " replica may lag behind a write), error (down, failed or too slow), skipped"
            " (shortly after an error)",
            ["reason"],
            registry=r,
        )
        self._request_children: dict[tuple[str, int, str], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._wait = {p: self.queue_wait.labels(p) for p in PRIORITY_NAMES}
        self._shed = {p: self.shed.labels(p) for p in PRIORITY_NAMES}
        self._expired = {p: self.expired.labels(p) for p in PRIORITY_NAMES}
        self._depth = {p: self.queue_depth.labels(p) for p in PRIORITY_NAMES}
        self._decision = {d: self.decisions.labels(d) for d in C.DECISIONS}
        # Bound up front: every series exists at 0, so rates and alerts see them.
        self._fallback = {
            r: self.replica_fallbacks.labels(r) for r in ("not_found", "error", "skipped")
        }
        self._read = {s: self.reads.labels(s) for s in ("replica", "primary")}

    # -- hot path ---------------------------------------------------------------

    def observe_request(self, route: str, status: int, priority: str, seconds: float) -> None:
        key = (route, status, priority)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status), priority)
        child.inc()
        lkey = (route, priority)
        hist = self._latency_children.get(lkey)
        if hist is None:
            hist = self._latency_children[lkey] = self.latency.labels(route, priority)
        hist.observe(seconds)

    def observe_queue_wait(self, priority: str, seconds: float) -> None:
        self._wait[priority].observe(seconds)

    def observe_batch(self, items: int, seconds: float, decisions: dict[str, int]) -> None:
        self.batches.inc()
        self.batch_size.observe(items)
        self.batch_duration.observe(seconds)
        for name, n in decisions.items():
            if n:
                self._decision[name].inc(n)

    def observe_rules(self, counts: Sequence[tuple[str, str, int, int]]) -> None:
        """Per rule of a batch: (id, mode, rows matched, rows it decided)."""
        for rule_id, mode, matched, decided in counts:
            if matched:
                self.rule_hits.labels(rule_id, mode, "matched").inc(matched)
            if decided:
                self.rule_hits.labels(rule_id, mode, "decided").inc(decided)

    def replica_fallback(self, reason: str) -> None:
        self._fallback[reason].inc()

    def read_answered(self, server: str) -> None:
        self._read[server].inc()

    def shed_one(self, priority: str) -> None:
        self._shed[priority].inc()

    def gc_callback(self) -> Callable[[str, dict[str, int]], None]:
        """A ``gc.callbacks`` entry timing each collection into ``sankofa_gc_pause_seconds``."""
        children = {g: self.gc_pause.labels(str(g)) for g in range(3)}
        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                children[info["generation"]].observe(time.perf_counter() - started[0])

        return on_gc

    def door_shed_one(self, priority: str, signal: str) -> None:
        self.door_shed.labels(priority, signal).inc()

    def expired_one(self, priority: str) -> None:
        self._expired[priority].inc()

    def set_queue_depth(self, depth: dict[str, int]) -> None:
        for p, n in depth.items():
            self._depth[p].set(n)

    # -- exposition ---------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition, every worker's values summed in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
