"""Whether the online features can be trusted right now, and putting them back.

Two things can make them wrong: Redis is not answering (the scorer cannot read
the histories at all), or Redis answers but lost what it held (restarted
empty, flushed, failed over to a replica that lagged) or missed what was scored
while it was away. The guard tracks both, per worker process:

* ``available``: Redis answered the last check. While it does not, the scorer
  does not wait for it: it scores at once on degraded features (the
  transaction's own values; the history filled by the model's fallback),
  flags those decisions, and refuses the classes configured to fail closed
  with a 503. A circuit breaker, closed again by the next successful check.
* ``complete``: the histories hold every stored transaction a window can
  reach. The rebuild marker says so (``engine.rebuild``); a Redis that answers
  without it has lost them. Anything scored while Redis was away is missing
  from them too, until a rebuild that started after it.

Every ``check_every_s`` the guard asks Redis for the marker; when the
histories are incomplete it rebuilds them from PostgreSQL (one process at a
time, under a lock in Redis; the others wait for the marker) and decisions
are flagged until that is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Final

import asyncpg
from redis import exceptions as redis_errors

from sankofa.engine.features_online import REDIS_DOWN, FeatureStore, RedisClient
from sankofa.engine.rebuild import RebuildReport, marker_key, rebuild
from sankofa.errors import FeatureStoreUnavailableError

log = logging.getLogger(__name__)

_RELEASE: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def lock_key(prefix: str) -> str:
    return f"{marker_key(prefix)}:lock"


class FeatureGuard:
    def __init__(
        self,
        *,
        redis: RedisClient,
        store: FeatureStore,
        pool: asyncpg.Pool,
        prefix: str,
        check_every_s: float = 0.5,
        timeout_s: float = 1.0,
        rebuild_batch: int = 1000,
        lock_ttl_s: int = 3600,
    ) -> None:
        if not check_every_s > 0 or not timeout_s > 0:
            raise ValueError("check_every_s and timeout_s must be > 0")
        self._redis = redis
        self._store = store
        self._pool = pool
        self._prefix = prefix
        self._check_every_s = check_every_s
        self._timeout_s = timeout_s
        self._rebuild_batch = rebuild_batch
        self._lock_ttl_s = lock_ttl_s
        self.available = True
        self.complete = True
        #: Wall time of the last decision scored without Redis: a rebuild whose
        #: snapshot began after it has put that transaction back.
        self._missed_until: float | None = None
        self.rebuilds = 0
        self.last_rebuild: RebuildReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._rebuild_task: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        """Decisions made now would use degraded features."""
        return not (self.available and self.complete)

    def redis_failed(self) -> None:
        """The scorer's call failed: stop calling until a check succeeds, and treat
        the histories as incomplete (the failure may have been a restart)."""
        self.available = False
        self.complete = False

    def scored_without_redis(self) -> None:
        """A batch was stored that Redis never counted: it needs a rebuild."""
        self._missed_until = time.time()
        self.complete = False

    async def start(self, *, wait_s: float = 5.0) -> None:
        """A first check before serving, then the periodic checks. A rebuild the first
        check starts is waited for up to ``wait_s`` (a new or small deployment starts
        complete); a longer one goes on while the service scores, flagged."""
        await self.check()
        if self._rebuild_task is not None:
            await asyncio.wait([self._rebuild_task], timeout=wait_s)
            if self._rebuild_task.done():
                await self.check()
        self._task = asyncio.create_task(self._loop(), name="feature-guard")

    async def stop(self) -> None:
        for task in (self._task, self._rebuild_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._rebuild_task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_every_s)
            try:
                await self.check()
            except Exception:  # the guard must outlive any one failure
                log.exception("feature guard check failed")

    async def check(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                stamp = await self._redis.get(self._store.marker_key)
                # A cluster's other masters too: one that is down (failing over)
                # would fail every batch that touches it.
                reachable = await self._store.all_nodes_answer()
            if not reachable:
                raise redis_errors.ConnectionError("a Redis Cluster master does not answer")
        except (*REDIS_DOWN, redis_errors.RedisError):
            if self.available:
                log.warning("Redis unavailable: scoring on degraded features")
            self.available = False
            self.complete = False
            return
        if not self.available:
            log.info("Redis answers again")
        self.available = True
        built_at = _stamp(stamp)
        if built_at is not None and (self._missed_until is None or built_at > self._missed_until):
            if not self.complete:
                log.info("online features complete again")
            self.complete = True
            self._missed_until = None
            return
        self.complete = False
        if self._rebuild_task is None or self._rebuild_task.done():
            self._rebuild_task = asyncio.create_task(self._rebuild(), name="feature-rebuild")

    async def _rebuild(self) -> None:
        token = secrets.token_hex(8)
        key = f"{self._store.marker_key}:lock"
        try:
            got = await self._redis.set(key, token, nx=True, ex=self._lock_ttl_s)
        except (*REDIS_DOWN, redis_errors.RedisError):
            return
        if not got:
            return  # another process is rebuilding: wait for its marker
        try:
            log.warning("online features incomplete: rebuilding them from PostgreSQL")
            self.last_rebuild = await rebuild(
                self._pool, self._store, self._redis, self._prefix, batch=self._rebuild_batch
            )
            self.rebuilds += 1
        except (FeatureStoreUnavailableError, *REDIS_DOWN, redis_errors.RedisError) as exc:
            log.warning("rebuild interrupted (%s); will try again", type(exc).__name__)
        except Exception:
            log.exception("rebuild failed; will try again")
        finally:
            with contextlib.suppress(*REDIS_DOWN, redis_errors.RedisError):
                await self._redis.eval(_RELEASE, 1, key, token)


def _stamp(value: bytes | str | None) -> float | None:
    """The marker's value: when the rebuild's snapshot began (seconds since 1970)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return 0.0  # an older marker without a time: complete, but older than any miss
