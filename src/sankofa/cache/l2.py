"""L2: Redis through aiocache, shared by every cache of a process.

Values are stored as bytes with a one-byte tag (``constants.TAG_*``): a value, a
cached absence, or a tombstone left by an invalidation. Reads of a whole batch
of keys are one MGET; fills and invalidations are one Lua call each.

Every call is bounded by ``timeout_s`` (aiocache's own timeout) and the
connections by a socket timeout, so a black-holed Redis costs one short wait.
After a failure, Redis is left alone for ``retry_s``: reads skip L2 (straight
to PostgreSQL) instead of paying the timeout on every request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from aiocache import RedisCache
from aiocache.serializers import BaseSerializer
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from sankofa.cache.constants import FILL_SCRIPT, INVALIDATE_SCRIPT

#: What a Redis call can fail with: the server gone or refusing, an error reply,
#: a connection reset, a timeout (aiocache's, or the socket's).
L2_FAILURES: Final[tuple[type[BaseException], ...]] = (RedisError, OSError, TimeoutError)


class _RawBytes(BaseSerializer):  # type: ignore[misc]
    """Bytes in, bytes out: the cache encodes and decodes each entry itself, so that
    one corrupt entry is one miss, not a failed batch."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> Any:
        return value

    def loads(self, value: Any) -> Any:
        return value


def aiocache_from_url(url: str, *, timeout_s: float, pool_max: int, socket_timeout_s: float) -> Any:
    """An aiocache RedisCache on the server ``url`` names (host, port, db, user,
    password, TLS as redis-py reads them), with a bounded, blocking pool."""
    options: dict[str, Any] = dict(parse_url(url))
    host = options.pop("host", "127.0.0.1")
    port = options.pop("port", 6379)
    db = options.pop("db", 0)
    password = options.pop("password", None)
    options.update(
        socket_timeout=socket_timeout_s,
        # Waiting for a free connection is bounded too (BlockingConnectionPool).
        timeout=socket_timeout_s,
    )
    return RedisCache(
        serializer=_RawBytes(),
        endpoint=host,
        port=port,
        db=db,
        password=password,
        timeout=timeout_s,
        pool_max_size=pool_max,
        create_connection_timeout=socket_timeout_s,
        connection_pool_class=aioredis.BlockingConnectionPool,
        connection_pool_kwargs=options,
    )


class RedisLayer:
    """The L2 operations the layered cache needs, on one aiocache backend."""

    def __init__(
        self,
        *,
        backend: Any,
        timeout_s: float,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retry_s < 0:
            raise ValueError(f"retry_s must be >= 0, got {retry_s}")
        self.backend = backend
        self.timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._skip_until = float("-inf")

    @property
    def available(self) -> bool:
        """False for ``retry_s`` after a failure: callers skip L2 meanwhile."""
        return self._clock() >= self._skip_until

    def failed(self) -> None:
        self._skip_until = self._clock() + self._retry_s

    def succeeded(self) -> None:
        self._skip_until = float("-inf")

    def key(self, namespace: str, key: str) -> str:
        built: str = self.backend.build_key(key, namespace=namespace)
        return built

    async def multi_get(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self.backend.multi_get(
            list(keys), namespace=namespace, timeout=self.timeout_s
        )
        return values

    async def fill(self, namespace: str, entries: Sequence[tuple[str, int, bytes]]) -> int:
        """Write (key, ttl_ms, value) entries, each unless it holds a tombstone."""
        keys = [self.key(namespace, k) for k, _, _ in entries]
        args: list[Any] = []
        for _, ttl_ms, value in entries:
            args += [ttl_ms, value]
        written: int = await self.backend.raw(
            "eval", FILL_SCRIPT, len(keys), *keys, *args, timeout=self.timeout_s
        )
        return written

    async def invalidate(
        self,
        namespace: str,
        keys: Sequence[str],
        *,
        tombstone_ms: int,
        channel: str,
        message: bytes,
    ) -> int:
        full = [self.key(namespace, k) for k in keys]
        heard: int = await self.backend.raw(
            "eval",
            INVALIDATE_SCRIPT,
            len(full),
            *full,
            tombstone_ms,
            channel,
            message,
            timeout=self.timeout_s,
        )
        return heard

    async def close(self) -> None:
        # aiocache's close() calls redis-py's deprecated close(); aclose() is the same.
        await self.backend.client.aclose()
