"""The layered cache against real PostgreSQL and Redis (issue 5, item 5).

The loader reads a table of this test's own; every call of it first takes a
value from a PostgreSQL sequence, so PostgreSQL itself counts the loads.

- single flight: eight concurrent misses on one key call the loader once;
- layers: a second instance (empty L1) is answered by L2 without a load;
- invalidation: a write on instance A reaches instance B's L1 through Redis
  pub/sub within a second;
- Redis down (a redis-server of our own, stopped; a port nobody listens on):
  reads are answered from PostgreSQL, counted as failures, never raised;
- an invalidation Redis could not take (a stalled server) is retried until it
  goes through, and no stale L2 entry is served meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis as redis_sync
from prometheus_client import CollectorRegistry

from conftest import free_port
from sankofa.cache import LayeredCache, open_cache
from servers import private_redis

Loads = Callable[[], Awaitable[int]]


class Table:
    """A key/value table and the sequence counting the loader's queries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        tag = secrets.token_hex(4)
        self.name = f"cache_items_{tag}"
        self.seq = f"cache_loads_{tag}"

    async def create(self, rows: dict[str, str]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(f"CREATE TABLE {self.name} (k text PRIMARY KEY, v text NOT NULL)")
            await conn.execute(f"CREATE SEQUENCE {self.seq}")
            await conn.executemany(f"INSERT INTO {self.name} VALUES ($1, $2)", list(rows.items()))

    async def drop(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"DROP TABLE IF EXISTS {self.name}; DROP SEQUENCE IF EXISTS {self.seq}"
            )

    async def set(self, key: str, value: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(f"UPDATE {self.name} SET v = $2 WHERE k = $1", key, value)

    async def load_many(self, keys: Sequence[str]) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            await conn.fetchval(f"SELECT nextval('{self.seq}')")
            rows = await conn.fetch(f"SELECT k, v FROM {self.name} WHERE k = ANY($1)", list(keys))
        return {r["k"]: r["v"] for r in rows}

    async def loads(self) -> int:
        """How many times the loader has queried (PostgreSQL's count, not ours)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT last_value, is_called FROM {self.seq}")
        return int(row["last_value"]) if row["is_called"] else 0


@pytest.fixture
async def table(database_url: str) -> AsyncIterator[Table]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    t = Table(pool)
    await t.create({"a": "alpha", "b": "beta", "c": "gamma"})
    try:
        yield t
    finally:
        await t.drop()
        await pool.close()


CacheFactory = Callable[..., Awaitable[tuple[LayeredCache, CollectorRegistry]]]


@pytest.fixture
async def make_cache(
    table: Table, redis_url: str, redis_prefix: str
) -> AsyncIterator[CacheFactory]:
    """Opens caches (each an "instance": its own L1, L2 client and channel), the
    namespace ``items`` registered on ``table``; all closed at the end."""
    async with AsyncExitStack() as stack:

        async def make(
            url: str | None = redis_url, **options: Any
        ) -> tuple[LayeredCache, CollectorRegistry]:
            registry = CollectorRegistry()
            settings: dict[str, Any] = {"timeout_s": 0.25, "retry_s": 0.2, "start_wait_s": 2.0}
            settings.update(options)
            cache = await stack.enter_async_context(
                open_cache(redis_url=url, prefix=redis_prefix, registry=registry, **settings)
            )
            cache.register("items", table.load_many)
            return cache, registry

        yield make


async def eventually(read: Callable[[], Awaitable[Any]], want: Any, *, within_s: float) -> None:
    """Reads until ``read()`` gives ``want``: the change comes from another connection
    (a pub/sub message, a retry loop), with no event here to wait on."""
    async with asyncio.timeout(within_s):
        while await read() != want:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def lookups(registry: CollectorRegistry, layer: str, result: str) -> float:
    value = registry.get_sample_value(
        "sankofa_cache_lookups_total", {"cache": "items", "layer": layer, "result": result}
    )
    return value or 0.0


def failures(registry: CollectorRegistry, layer: str = "l2") -> float:
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "sankofa_cache_failures_total" and s.labels["layer"] == layer:
                total += s.value
    return total


async def test_eight_concurrent_misses_on_one_key_load_once(
    make_cache: CacheFactory, table: Table
) -> None:
    cache, registry = await make_cache()
    got = await asyncio.gather(*(cache.get("items", "a") for _ in range(8)))
    assert got == ["alpha"] * 8
    assert await table.loads() == 1
    assert lookups(registry, "l1", "miss") == 8
    assert lookups(registry, "l3", "hit") == 1
    # And the next reads are L1's.
    assert await cache.get("items", "a") == "alpha"
    assert await table.loads() == 1
    assert lookups(registry, "l1", "hit") == 1


async def test_overlapping_batches_share_the_flight(make_cache: CacheFactory, table: Table) -> None:
    cache, _ = await make_cache()
    first, second = await asyncio.gather(
        cache.get_many("items", ["a", "b"]), cache.get_many("items", ["b", "c", "zz"])
    )
    assert first == {"a": "alpha", "b": "beta"}
    assert second == {"b": "beta", "c": "gamma", "zz": None}
    assert await table.loads() == 2  # {a, b} and {c, zz}: b was read once


async def test_a_cancelled_reader_leaves_the_load_to_the_others(
    make_cache: CacheFactory, table: Table
) -> None:
    cache, _ = await make_cache()
    slow_loads = 0

    async def slow(keys: Sequence[str]) -> dict[str, str]:
        nonlocal slow_loads
        slow_loads += 1
        async with table.pool.acquire() as conn:
            await conn.execute("SELECT pg_sleep(0.2)")
        return await table.load_many(keys)

    cache.register("slow", slow)
    first = asyncio.create_task(cache.get("slow", "a"))
    second = asyncio.create_task(cache.get("slow", "a"))
    await asyncio.sleep(0.05)  # both are waiting on the one load now
    first.cancel()
    assert await second == "alpha"
    assert first.cancelled()
    assert slow_loads == 1


async def test_second_instance_reads_l2_without_loading(
    make_cache: CacheFactory, table: Table
) -> None:
    a, _ = await make_cache()
    b, b_registry = await make_cache()
    assert await a.get_many("items", ["a", "b"]) == {"a": "alpha", "b": "beta"}
    assert await table.loads() == 1
    assert await b.get_many("items", ["a", "b"]) == {"a": "alpha", "b": "beta"}
    assert await table.loads() == 1
    assert lookups(b_registry, "l2", "hit") == 2


async def test_absent_keys_are_not_cached_by_default(
    make_cache: CacheFactory, table: Table
) -> None:
    cache, _ = await make_cache()
    assert await cache.get("items", "new") is None
    async with table.pool.acquire() as conn:
        await conn.execute(f"INSERT INTO {table.name} VALUES ('new', 'fresh')")
    # A key that did not exist may be written any moment: its absence was not kept.
    assert await cache.get("items", "new") == "fresh"


async def test_a_write_reaches_the_other_instance_within_a_second(
    make_cache: CacheFactory, table: Table
) -> None:
    a, _ = await make_cache()
    b, b_registry = await make_cache()
    assert await a.get("items", "a") == "alpha"
    assert await b.get("items", "a") == "alpha"
    await table.set("a", "ALPHA")
    # B's L1 holds the old value: without the invalidation B would keep serving it.
    assert await b.get("items", "a") == "alpha"
    assert await a.invalidate("items", ["a"]) is True
    assert await a.get("items", "a") == "ALPHA"  # A's own L1 dropped at once
    await eventually(lambda: b.get("items", "a"), "ALPHA", within_s=1.0)
    assert (
        b_registry.get_sample_value(
            "sankofa_cache_invalidations_total", {"cache": "items", "source": "remote"}
        )
        == 1
    )


async def test_a_unix_socket_url_works_as_the_embedded_redis_uses_one(
    make_cache: CacheFactory, table: Table, tmp_path: Path
) -> None:
    sock = tmp_path / "redis.sock"
    with private_redis(tmp_path, "--unixsocket", str(sock), "--unixsocketperm", "700"):
        url = f"unix://{sock}?db=0"
        a, a_registry = await make_cache(url)
        b, b_registry = await make_cache(url)
        assert a.invalidation_heard and b.invalidation_heard
        assert await a.get("items", "a") == "alpha"
        assert await b.get("items", "a") == "alpha"
        assert await table.loads() == 1
        assert lookups(b_registry, "l2", "hit") == 1
        assert failures(a_registry) == failures(b_registry) == 0


async def test_without_l2_the_channel_alone_invalidates_the_other_instance(
    make_cache: CacheFactory, table: Table
) -> None:
    """As on a Redis Cluster with no cache Redis of its own: no L2, pub/sub only."""
    a, _ = await make_cache(use_l2=False)
    b, b_registry = await make_cache(use_l2=False)
    assert a.invalidation_heard and b.invalidation_heard
    assert await a.get("items", "a") == "alpha"
    assert await b.get("items", "a") == "alpha"
    assert await table.loads() == 2  # no L2 to share
    await table.set("a", "ALPHA")
    assert await b.get("items", "a") == "alpha"  # B's L1
    assert await a.invalidate("items", ["a"]) is True
    await eventually(lambda: b.get("items", "a"), "ALPHA", within_s=1.0)
    assert lookups(b_registry, "l2", "hit") + lookups(b_registry, "l2", "miss") == 0


async def test_redis_stopped_is_a_miss_and_a_metric(
    make_cache: CacheFactory, table: Table, tmp_path: Path
) -> None:
    with private_redis(tmp_path) as url:
        cache, registry = await make_cache(url)
        assert await cache.get("items", "a") == "alpha"
        client = redis_sync.Redis.from_url(url)
        try:
            client.shutdown(nosave=True)
        except redis_sync.ConnectionError:
            pass  # the server closes the connection as it goes
        finally:
            client.close()
        for _ in range(3):
            assert await cache.get_many("items", ["a", "b", "zz"]) == {
                "a": "alpha",
                "b": "beta",
                "zz": None,
            }
        await table.set("b", "BETA")
        assert await cache.invalidate("items", ["b"]) is False  # said, not raised
        assert await cache.get("items", "b") == "BETA"
        assert failures(registry) >= 1
        assert lookups(registry, "l3", "hit") >= 3


async def test_redis_never_reachable_is_a_miss_and_a_metric(
    make_cache: CacheFactory, table: Table
) -> None:
    cache, registry = await make_cache(f"redis://127.0.0.1:{free_port()}/0", start_wait_s=0.2)
    assert not cache.invalidation_heard
    assert await cache.get_many("items", ["a", "c"]) == {"a": "alpha", "c": "gamma"}
    assert await cache.get("items", "a") == "alpha"
    assert await table.loads() == 2  # no layer could keep it: every read loads
    assert failures(registry, "l2") >= 1
    assert failures(registry, "l1") >= 1  # L1 bypassed: the channel is not heard


async def test_an_invalidation_redis_missed_is_retried(
    make_cache: CacheFactory, table: Table, tmp_path: Path
) -> None:
    with private_redis(tmp_path) as url:
        a, _ = await make_cache(url)
        b, _ = await make_cache(url)
        assert await a.get("items", "a") == "alpha"  # in L2 now
        await table.set("a", "ALPHA")
        stall = threading.Thread(
            target=lambda: redis_sync.Redis.from_url(url).execute_command("DEBUG", "SLEEP", "1.0")
        )
        stall.start()
        try:
            await asyncio.sleep(0.1)  # let the stall begin (a server-side sleep, not a wait for us)
            assert await a.invalidate("items", ["a"]) is False
            assert a.namespace("items").pending == 1
            # A does not read the stale L2 entry meanwhile.
            assert await a.get("items", "a") == "ALPHA"
        finally:
            await asyncio.to_thread(stall.join)
        await eventually(lambda: pending(a), 0, within_s=5.0)
        # The tombstone is in L2: B (empty or cleared L1) loads the new value.
        await eventually(lambda: b.get("items", "a"), "ALPHA", within_s=3.0)


async def pending(cache: LayeredCache) -> int:
    return cache.namespace("items").pending
