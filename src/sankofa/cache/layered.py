"""The three-layer cache: L1 in process, L2 Redis, L3 PostgreSQL (the source of truth).

One ``LayeredCache`` per process, opened by the lifespan (``open_cache``) and
handed to the routes as ``services.cache``. It holds *namespaces*, each with
its own loader, encoding and times to live.

Plugging a new kind of data in (rules, lists, limits, profiles)
---------------------------------------------------------------

1. Write the loader, the only code that reads PostgreSQL for it::

       async def load_many(keys: Sequence[str]) -> Mapping[str, V | None]:
           # one query for every key; a key left out (or None) means "no such thing"

2. Register it once, in the lifespan, before serving::

       cache.register("rules", load_many, codec=JsonCodec(), l1_ttl_s=30.0)

3. Read through it: ``await cache.get_many("rules", keys)`` (a dict with every
   key, None where the loader had nothing) or ``await cache.get("rules", key)``.
4. After every write to the source of truth has committed:
   ``await cache.invalidate("rules", keys)``.

Where absence is the common answer (a customer on no hot list), cache it too:
``l1_negative_ttl_s`` / ``l2_negative_ttl_s``, and invalidate on inserts as well
as on updates and deletes. A whole batch reads with one ``get_many`` call: one
pass over L1, at most one Redis round trip and one load for what is left.

Keys are strings; values must be treated as immutable (L1 hands the same object
to every reader) and must survive the codec (``JsonCodec`` for JSON-shaped
values, ``BytesCodec`` for a rendered body). Changing a value's encoding means
bumping the namespace's ``version`` so that old L2 entries are not read.

The read path (``get_many``)
----------------------------

1. L1: a bounded LRU map with a time to live per entry; absences (None) may be
   cached too, with their own time to live (0: never, the default: a key that
   does not exist yet may be written any moment). Used only while this process
   hears the invalidation channel (``bus.InvalidationBus``).
2. L2: one MGET for every key L1 did not have (aiocache, ``l2.RedisLayer``).
3. L3: one ``load_many`` call for what L2 did not have; the loaded values fill
   L2 (one Lua call) and L1.

Single flight: while keys are being fetched (L2 then L3), another read of the
same keys in this process waits for that fetch instead of starting its own, so
eight concurrent misses on one key read PostgreSQL once. The fetch runs in a
task of its own: a reader that is cancelled does not cancel it for the others.

Invalidation: ``invalidate`` drops the keys from this process's L1 at once,
tombstones them in L2 and publishes them on the channel, in one round trip;
every other instance drops them from its L1 when it hears it (milliseconds).
Loads in flight for those keys are marked stale: their values still go to the
readers already waiting, but fill no layer. The tombstone keeps a load that
started before the write from filling L2 with the old value afterwards.

Failures: a cache failure is a miss and a metric, never an error. Redis down,
slow or answering garbage sends the read on to PostgreSQL, and Redis is left
alone for ``retry_s`` after a failure (``metrics.CacheMetrics`` counts each
case). While the channel is not heard, every L1 is bypassed (it could miss an
invalidation). An invalidation that cannot reach Redis is kept pending and
retried every ``retry_s``; until it goes through this process does not read or
fill L2 for those keys. Only the loader's own failure (PostgreSQL down)
reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from sankofa.cache._namespace import Loader, Namespace
from sankofa.cache.bus import InvalidationBus
from sankofa.cache.codec import Codec, JsonCodec
from sankofa.cache.constants import INVALIDATION_CHANNEL
from sankofa.cache.l2 import RedisLayer, aiocache_from_url
from sankofa.cache.metrics import CacheMetrics

log = logging.getLogger(__name__)


class LayeredCache:
    """The process's namespaces, their shared L2 and invalidation channel."""

    def __init__(
        self,
        *,
        prefix: str,
        metrics: CacheMetrics,
        l2: RedisLayer | None,
        bus: InvalidationBus | None,
        retry_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retry_every_s <= 0:
            raise ValueError(f"retry_every_s must be > 0, got {retry_every_s}")
        self._prefix = prefix
        self._metrics = metrics
        self._l2 = l2
        self._bus = bus
        self._retry_every_s = retry_every_s
        self._clock = clock
        self._namespaces: dict[str, Namespace[Any]] = {}
        self._retrier: asyncio.Task[None] | None = None

    def register(
        self,
        namespace: str,
        load_many: Loader[Any],
        *,
        codec: Codec[Any] | None = None,
        **options: Any,
    ) -> Namespace[Any]:
        """Add a namespace read through ``load_many``. ``options``: ``Namespace``'s
        (``l1_max_entries``, ``l1_ttl_s``, ``l1_negative_ttl_s``, ``l2_ttl_s``,
        ``l2_negative_ttl_s``, ``load_timeout_s``, ``tombstone_ttl_s``, ``version``)."""
        if namespace in self._namespaces:
            raise ValueError(f"cache namespace {namespace!r} is already registered")
        ns: Namespace[Any] = Namespace(
            name=namespace,
            load_many=load_many,
            codec=codec if codec is not None else JsonCodec(),
            metrics=self._metrics.bind(namespace),
            prefix=self._prefix,
            l2=self._l2,
            bus=self._bus,
            clock=self._clock,
            **options,
        )
        self._namespaces[namespace] = ns
        return ns

    def namespace(self, name: str) -> Namespace[Any]:
        try:
            return self._namespaces[name]
        except KeyError:
            raise ValueError(f"no cache namespace {name!r} is registered") from None

    async def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        """Every key's value (None where the loader has none). Errors: the loader's only."""
        return await self.namespace(namespace).get_many(keys)

    async def get(self, namespace: str, key: str) -> Any:
        return await self.namespace(namespace).get(key)

    async def invalidate(self, namespace: str, keys: Sequence[str]) -> bool:
        """After a write has committed. False when Redis could not be told now (the
        keys are retried every ``retry_every_s``); never raises for a cache failure."""
        return await self.namespace(namespace).invalidate(keys)

    @property
    def invalidation_heard(self) -> bool:
        """Whether L1 is in use: the channel is heard (always, without Redis)."""
        return self._bus is None or self._bus.heard

    async def start(self, wait_s: float) -> None:
        """Start the channel (waiting up to ``wait_s`` for it; L1 stays bypassed until
        it is heard) and the retry loop for pending invalidations."""
        if self._bus is not None:
            if not await self._bus.start(wait_s):
                log.warning("cache invalidation channel not heard yet; L1 bypassed until it is")
        if self._l2 is not None or self._bus is not None:
            self._retrier = asyncio.create_task(self._retry_loop(), name="sankofa-cache-retry")

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retry_every_s)
            for ns in self._namespaces.values():
                if ns.pending:
                    try:
                        await ns.retry_pending()
                    except Exception:  # never let the loop die: pending keys would stay
                        log.exception("cache %s: retrying invalidations failed", ns.name)

    async def close(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
            self._retrier = None
        for ns in self._namespaces.values():
            await ns.close()
        if self._bus is not None:
            await self._bus.stop()
        if self._l2 is not None:
            await self._l2.close()


@contextlib.asynccontextmanager
async def open_cache(
    *,
    redis_url: str | None,
    prefix: str,
    registry: CollectorRegistry,
    timeout_s: float = 0.25,
    retry_s: float = 1.0,
    pool_max: int = 8,
    start_wait_s: float = 1.0,
    use_l2: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[LayeredCache]:
    """A started ``LayeredCache`` on ``redis_url`` (None: L1 and the loaders only, for
    a single process), its metrics on ``registry``; closed on exit. Redis need not
    answer at start: the cache reads PostgreSQL until it does.

    ``use_l2=False``: Redis carries the invalidation channel only (pub/sub works
    on any node of a Redis Cluster, where L2's multi-key calls would not)."""
    metrics = CacheMetrics(registry)
    l2: RedisLayer | None = None
    bus: InvalidationBus | None = None
    if redis_url is not None and use_l2:
        l2 = RedisLayer(
            backend=aiocache_from_url(
                redis_url, timeout_s=timeout_s, pool_max=pool_max, socket_timeout_s=timeout_s
            ),
            timeout_s=timeout_s,
            retry_s=retry_s,
            clock=clock,
        )
    if redis_url is not None:
        bus = InvalidationBus(
            redis_url=redis_url,
            channel=INVALIDATION_CHANNEL.format(prefix=prefix),
            retry_s=min(retry_s, 0.5),
            connect_timeout_s=max(timeout_s, 0.5),
        )
    cache = LayeredCache(prefix=prefix, metrics=metrics, l2=l2, bus=bus, retry_every_s=retry_s)
    try:
        await cache.start(start_wait_s)
        yield cache
    finally:
        await cache.close()
