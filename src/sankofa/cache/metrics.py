"""The cache's Prometheus series, registered on the service's registry.

Per cache (``cache`` label) and layer (``l1`` in process, ``l2`` Redis, ``l3``
PostgreSQL):

* ``sankofa_cache_lookups_total{cache,layer,result}``: keys looked up in a layer,
  ``hit`` or ``miss`` (for l3: found, or the loader said None). The hit ratio of a
  layer is hits / (hits + misses) of that layer; of the whole cache, l1 and l2 hits
  over all l1 lookups.
* ``sankofa_cache_latency_seconds{cache,layer}``: one observation per call to a
  layer (a whole batch of keys: the L1 pass, one Redis round trip, one load).
* ``sankofa_cache_failures_total{cache,layer,op,reason}``: a layer that failed and
  was treated as a miss: ``timeout``, ``error`` (connection refused, reset, a Redis
  error), ``corrupt`` (an entry that does not decode), ``skipped`` (Redis left
  alone for a moment after a failure), ``unsubscribed`` (L1 bypassed while the
  invalidation channel is not heard).
* ``sankofa_cache_invalidations_total{cache,source}``: keys dropped from L1 by this
  instance's own writes (``local``) or another's, heard on the channel (``remote``).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

from sankofa.cache.constants import LATENCY_BUCKETS

Layer = Literal["l1", "l2", "l3"]
LAYERS: Final[tuple[Layer, ...]] = ("l1", "l2", "l3")


class CacheMetrics:
    """The series for every cache of one process, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "sankofa_cache_lookups",
            "Keys looked up in a cache layer (l1 in process, l2 Redis, l3 PostgreSQL), hit or miss",
            ["cache", "layer", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "sankofa_cache_latency_seconds",
            "Time of one call to a cache layer (a batch of keys)",
            ["cache", "layer"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "sankofa_cache_failures",
            "Cache layer failures answered as misses, by operation and reason",
            ["cache", "layer", "op", "reason"],
            registry=registry,
        )
        self.invalidations = Counter(
            "sankofa_cache_invalidations",
            "Keys dropped from L1 by a write: this instance's own (local) or another's (remote)",
            ["cache", "source"],
            registry=registry,
        )

    def bind(self, cache: str) -> BoundCacheMetrics:
        return BoundCacheMetrics(self, cache)


class BoundCacheMetrics:
    """One cache's children, bound once: the hot path only increments and observes."""

    __slots__ = ("_failures", "_parent", "cache", "hits", "invalidated", "latency", "misses")

    def __init__(self, parent: CacheMetrics, cache: str) -> None:
        self._parent = parent
        self.cache = cache
        self.hits = {layer: parent.lookups.labels(cache, layer, "hit") for layer in LAYERS}
        self.misses = {layer: parent.lookups.labels(cache, layer, "miss") for layer in LAYERS}
        self.latency = {layer: parent.latency.labels(cache, layer) for layer in LAYERS}
        self.invalidated = {s: parent.invalidations.labels(cache, s) for s in ("local", "remote")}
        self._failures: dict[tuple[str, str, str], Any] = {}

    def failure(self, layer: Layer, op: str, reason: str, n: int = 1) -> None:
        key = (layer, op, reason)
        child = self._failures.get(key)
        if child is None:
            child = self._failures[key] = self._parent.failures.labels(self.cache, *key)
        child.inc(n)
