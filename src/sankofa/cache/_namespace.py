"""One namespace of the layered cache: its L1, the read path through L2 and the
loader, single flight and invalidation. ``layered.LayeredCache`` holds the
namespaces and documents the whole design."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from sankofa.cache._l1 import MISSING, LruTtl
from sankofa.cache.bus import InvalidationBus, invalidation_message
from sankofa.cache.codec import Codec
from sankofa.cache.constants import (
    INVALIDATE_CHUNK,
    L2_NAMESPACE,
    TAG_NONE,
    TAG_TOMBSTONE,
    TAG_VALUE,
)
from sankofa.cache.l2 import L2_FAILURES, RedisLayer
from sankofa.cache.metrics import BoundCacheMetrics

log = logging.getLogger(__name__)

V = TypeVar("V")
Loader = Callable[[Sequence[str]], Awaitable[Mapping[str, V | None]]]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "error" if isinstance(exc, L2_FAILURES) else "unexpected"


class _Flight(Generic[V]):
    """One fetch (L2 then L3) of a group of keys, awaited by every reader of them."""

    __slots__ = ("stale", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[dict[str, V | None]] | None = None
        #: Keys invalidated while this fetch ran: returned, never cached.
        self.stale: set[str] = set()


class Namespace(Generic[V]):
    """One namespace (``name``) of the layered cache, in front of ``load_many``."""

    def __init__(
        self,
        *,
        name: str,
        load_many: Loader[V],
        codec: Codec[V],
        metrics: BoundCacheMetrics,
        prefix: str,
        l2: RedisLayer | None,
        bus: InvalidationBus | None,
        version: int = 1,
        l1_max_entries: int = 10_000,
        l1_ttl_s: float = 30.0,
        l1_negative_ttl_s: float = 0.0,
        l2_ttl_s: float = 300.0,
        l2_negative_ttl_s: float = 0.0,
        load_timeout_s: float = 5.0,
        tombstone_ttl_s: float = 15.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not name or ":" in name:
            raise ValueError(f"name must be non-empty without ':', got {name!r}")
        for arg, value in (
            ("l1_ttl_s", l1_ttl_s),
            ("l1_negative_ttl_s", l1_negative_ttl_s),
            ("l2_ttl_s", l2_ttl_s),
            ("l2_negative_ttl_s", l2_negative_ttl_s),
        ):
            if value < 0:
                raise ValueError(f"{arg} must be >= 0, got {value}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s must be > 0, got {load_timeout_s}")
        if l2 is not None and tombstone_ttl_s <= load_timeout_s + 2 * l2.timeout_s:
            raise ValueError(
                "tombstone_ttl_s must exceed load_timeout_s plus two Redis timeouts, so that"
                f" no load older than a write can fill L2 after it; got {tombstone_ttl_s}"
            )
        self.name = name
        self._load_many = load_many
        self._codec = codec
        self._m = metrics
        self._l2 = l2
        self._bus = bus
        self._namespace = L2_NAMESPACE.format(prefix=prefix, name=name, version=version)
        self._l1: LruTtl[V] = LruTtl(max_entries=l1_max_entries, clock=clock)
        self._l1_ttl_s = l1_ttl_s
        self._l1_negative_ttl_s = l1_negative_ttl_s
        self._l2_ttl_ms = int(l2_ttl_s * 1000)
        self._l2_negative_ttl_ms = int(l2_negative_ttl_s * 1000)
        self._load_timeout_s = load_timeout_s
        self._tombstone_ttl_s = tombstone_ttl_s
        self._clock = clock
        self._flights: dict[str, _Flight[V]] = {}
        #: Keys whose invalidation has not reached Redis yet (it was down): L2 may
        #: still hold their old value, so it is neither read nor filled for them
        #: until ``retry_pending`` gets the invalidation through.
        self._pending: dict[str, None] = {}
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[dict[str, V | None]]] = set()
        if bus is not None:
            bus.register(name, self)

    # -- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> V | None:
        return (await self.get_many((key,)))[key]

    async def get_many(self, keys: Sequence[str]) -> dict[str, V | None]:
        """Every key's value, None where the loader has none. Errors: the loader's only."""
        m = self._m
        out: dict[str, V | None] = {}
        unique = list(dict.fromkeys(keys))
        missing: list[str] = []
        if self._l1_usable():
            started = time.perf_counter()
            get = self._l1.get
            for key in unique:
                value = get(key)
                if value is MISSING:
                    missing.append(key)
                else:
                    out[key] = value  # type: ignore[assignment]
            m.latency["l1"].observe(time.perf_counter() - started)
            if out:
                m.hits["l1"].inc(len(out))
        else:
            missing = unique
            m.failure("l1", "get", "unsubscribed", len(missing))
        if not missing:
            return out
        m.misses["l1"].inc(len(missing))

        waiting: dict[_Flight[V], list[str]] = {}
        new: list[str] = []
        for key in missing:
            flight = self._flights.get(key)
            if flight is None:
                new.append(key)
            else:
                waiting.setdefault(flight, []).append(key)
        if new:
            flight = _Flight()
            for key in new:
                self._flights[key] = flight
            task = asyncio.create_task(self._fetch(new, flight), name=f"cache-{self.name}-fetch")
            flight.task = task
            self._tasks.add(task)
            task.add_done_callback(self._reap)
            waiting[flight] = new
        for flight, wanted in waiting.items():
            assert flight.task is not None
            # shield: a reader cancelled meanwhile leaves the fetch to the others.
            fetched = await asyncio.shield(flight.task)
            for key in wanted:
                out[key] = fetched[key]
        return out

    def _l1_usable(self) -> bool:
        return self._bus is None or self._bus.heard

    def _reap(self, task: asyncio.Task[dict[str, V | None]]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            # Retrieved here so that a failure nobody waited for (every reader
            # cancelled) is not reported as "never retrieved"; readers get it too.
            task.exception()

    async def _fetch(self, keys: list[str], flight: _Flight[V]) -> dict[str, V | None]:
        started = self._clock()
        epoch = self._bus.epoch if self._bus is not None else 0
        try:
            values: dict[str, V | None] = {}
            pending = self._pending
            via_l2 = [k for k in keys if k not in pending] if pending else keys
            to_load = self._read_l2(via_l2, await self._l2_get(via_l2), values)
            if len(via_l2) < len(keys):
                to_load += [k for k in keys if k in pending]
            if to_load:
                loaded = await self._load(to_load)
                for key in to_load:
                    values[key] = loaded.get(key)
                await self._fill_l2(to_load, values, flight, started)
            self._fill_l1(keys, values, flight, epoch)
            return values
        finally:
            for key in keys:
                if self._flights.get(key) is flight:
                    del self._flights[key]

    async def _l2_get(self, keys: list[str]) -> list[bytes | None] | None:
        l2 = self._l2
        if l2 is None or not keys:
            return None
        if not l2.available:
            self._m.failure("l2", "get", "skipped", len(keys))
            return None
        started = time.perf_counter()
        try:
            raw = await l2.multi_get(self._namespace, keys)
        except Exception as exc:  # any failure of L2 is a miss (logged), never the caller's
            self._l2_failed("get", exc, len(keys))
            return None
        finally:
            self._m.latency["l2"].observe(time.perf_counter() - started)
        return raw

    def _read_l2(
        self, keys: list[str], raw: list[bytes | None] | None, values: dict[str, V | None]
    ) -> list[str]:
        """Decode what L2 answered into ``values``; the keys left for L3."""
        if raw is None:
            return keys
        to_load: list[str] = []
        loads = self._codec.loads
        corrupt = 0
        for key, data in zip(keys, raw, strict=True):
            if not data:
                to_load.append(key)
                continue
            tag = data[:1]
            if tag == TAG_VALUE:
                try:
                    values[key] = loads(data[1:])
                except Exception:  # any decoder's error: the entry is unusable
                    corrupt += 1
                    to_load.append(key)
            elif tag == TAG_NONE and len(data) == 1:
                values[key] = None
            elif tag == TAG_TOMBSTONE:
                to_load.append(key)
            else:
                corrupt += 1
                to_load.append(key)
        if corrupt:
            self._m.failure("l2", "get", "corrupt", corrupt)
        hits = len(keys) - len(to_load)
        if hits:
            self._m.hits["l2"].inc(hits)
        if to_load:
            self._m.misses["l2"].inc(len(to_load))
        return to_load

    async def _load(self, keys: list[str]) -> Mapping[str, V | None]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._load_timeout_s):
                loaded = await self._load_many(keys)
        finally:
            self._m.latency["l3"].observe(time.perf_counter() - started)
        found = sum(1 for k in keys if loaded.get(k) is not None)
        if found:
            self._m.hits["l3"].inc(found)
        if found < len(keys):
            self._m.misses["l3"].inc(len(keys) - found)
        return loaded

    async def _fill_l2(
        self, keys: list[str], values: dict[str, V | None], flight: _Flight[V], started: float
    ) -> None:
        l2 = self._l2
        if l2 is None or not l2.available:
            return
        # Belt and braces beside the tombstones: a load that took longer than a
        # tombstone lives could be older than a write whose tombstone is gone.
        if self._clock() - started >= self._tombstone_ttl_s - l2.timeout_s:
            return
        entries: list[tuple[str, int, bytes]] = []
        dumps = self._codec.dumps
        pending = self._pending
        for key in keys:
            if key in flight.stale or key in pending:
                continue
            value = values[key]
            if value is None:
                if self._l2_negative_ttl_ms > 0:
                    entries.append((key, self._l2_negative_ttl_ms, TAG_NONE))
            elif self._l2_ttl_ms > 0:
                try:
                    entries.append((key, self._l2_ttl_ms, TAG_VALUE + dumps(value)))
                except Exception:  # a value the codec cannot store is not cached in L2
                    self._m.failure("l2", "fill", "encode")
        if not entries:
            return
        try:
            await l2.fill(self._namespace, entries)
        except Exception as exc:  # any failure of L2 is a miss (logged), never the caller's
            self._l2_failed("fill", exc, 1)

    def _fill_l1(
        self, keys: list[str], values: dict[str, V | None], flight: _Flight[V], epoch: int
    ) -> None:
        bus = self._bus
        if bus is not None and (not bus.heard or bus.epoch != epoch):
            return  # invalidations may have been missed meanwhile
        put = self._l1.put
        for key in keys:
            if key in flight.stale:
                continue
            value = values[key]
            put(key, value, self._l1_ttl_s if value is not None else self._l1_negative_ttl_s)

    def _l2_failed(self, op: str, exc: BaseException, n: int) -> None:
        assert self._l2 is not None
        if self._l2.available:
            log.warning(
                "cache %s: Redis %s failed (%s: %s); reading PostgreSQL meanwhile",
                self.name,
                op,
                type(exc).__name__,
                exc,
                # Not a Redis failure as such (a bug, a misconfiguration): say where.
                exc_info=not isinstance(exc, L2_FAILURES),
            )
        self._l2.failed()
        self._m.failure("l2", op, _reason(exc), n)

    # -- writes -----------------------------------------------------------------------

    async def invalidate(self, keys: Sequence[str]) -> bool:
        """After a write has committed: drop ``keys`` everywhere. False when Redis could
        not be told (logged and counted): this process's L1 is dropped anyway, the
        keys are kept as pending (L2 skipped for them here) and ``retry_pending``
        sends the invalidation once Redis answers; meanwhile the other instances do
        not hear the channel either, so their L1 is bypassed."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return True
        self._drop(unique, "local")
        if self._l2 is None and self._bus is None:
            return True  # a single process: nobody else to tell
        self._add_pending(unique)
        return await self.retry_pending()

    async def retry_pending(self) -> bool:
        """Send the pending invalidations to Redis; True when none is left."""
        l2 = self._l2
        if not self._pending:
            return True
        if l2 is None:
            return await self._publish_pending()
        if not l2.available:
            return False  # left alone for a moment after a failure: the retry loop comes back
        pending = list(self._pending)
        for i in range(0, len(pending), INVALIDATE_CHUNK):
            keys = pending[i : i + INVALIDATE_CHUNK]
            try:
                await l2.invalidate(
                    self._namespace,
                    keys,
                    tombstone_ms=int(self._tombstone_ttl_s * 1000),
                    channel=self._bus.channel if self._bus is not None else "",
                    message=invalidation_message(self.name, keys),
                )
            except Exception as exc:  # any failure of L2 is a miss (logged), never the caller's
                self._l2_failed("invalidate", exc, 1)
                return False
            l2.succeeded()
            for key in keys:
                self._pending.pop(key, None)
        return not self._pending

    async def _publish_pending(self) -> bool:
        """Without L2 (a Redis Cluster and no cache Redis of its own): the other
        instances' L1 is told on the channel alone; there is no L2 entry to tombstone."""
        bus = self._bus
        assert bus is not None
        pending = list(self._pending)
        for i in range(0, len(pending), INVALIDATE_CHUNK):
            keys = pending[i : i + INVALIDATE_CHUNK]
            try:
                await bus.publish(invalidation_message(self.name, keys))
            except Exception as exc:  # never the caller's error: retried by the loop
                self._m.failure("l1", "invalidate", _reason(exc))
                return False
            for key in keys:
                self._pending.pop(key, None)
        return not self._pending

    def _add_pending(self, keys: Sequence[str]) -> None:
        pending = self._pending
        for key in keys:
            pending.pop(key, None)
            pending[key] = None
        if len(pending) > self._max_pending:
            # Bounded: the oldest are forgotten, and may be served from L2 until
            # their time to live ends. Counted, so that it is seen.
            over = len(pending) - self._max_pending
            for key in list(pending)[:over]:
                del pending[key]
            self._m.failure("l2", "invalidate", "pending_dropped", over)

    @property
    def pending(self) -> int:
        """Invalidations not yet through to Redis."""
        return len(self._pending)

    def drop_remote(self, keys: Sequence[str]) -> None:
        """Called by the bus for another instance's write (or this one's, heard back)."""
        self._drop(keys, "remote")

    def _drop(self, keys: Sequence[str], source: str) -> None:
        self._l1.discard(keys)
        flights = self._flights
        for key in keys:
            flight = flights.pop(key, None)
            if flight is not None:
                flight.stale.add(key)
        self._m.invalidated[source].inc(len(keys))

    def clear_l1(self) -> None:
        self._l1.clear()
        for key, flight in self._flights.items():
            flight.stale.add(key)
        self._flights.clear()

    @property
    def l1_size(self) -> int:
        return len(self._l1)

    async def close(self) -> None:
        """Wait for fetches still running (their readers are gone or waiting)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
