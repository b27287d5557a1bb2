"""The invalidation channel: every instance hears which keys to drop from L1.

One subscriber connection per process, shared by its caches. A write publishes
``{"c": cache name, "k": [keys]}`` (``l2.RedisLayer.invalidate``, in the same
round trip that tombstones the keys in L2); every subscriber drops those keys
from that cache's L1 and marks its loads in flight for them as stale.

Redis pub/sub delivers at most once: a message sent while a subscriber is cut off
is lost for it. So L1 is trusted only while the channel is heard (``heard``):

* the subscriber pings every ``ping_every_s``; nothing heard (message or pong)
  for ``dead_after_s`` means the connection is dead, even if no error said so
  (a black-holed server);
* on losing the channel, every L1 is cleared and bypassed (reads go to L2, then
  PostgreSQL) until the subscription is confirmed again, and cleared once more
  then: whatever was missed meanwhile cannot be served from L1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import orjson
import redis.asyncio as aioredis

from sankofa.cache.l2 import L2_FAILURES

log = logging.getLogger(__name__)

#: Redis replies to a PING on a subscribed connection with this payload.
_PING_PAYLOAD: Final = b"sankofa-cache"


class Subscriber(Protocol):
    """What the bus calls on a cache."""

    def drop_remote(self, keys: Sequence[str]) -> None: ...

    def clear_l1(self) -> None: ...


class InvalidationBus:
    """Subscribes to ``channel`` on its own connection; keeps it alive and heard."""

    def __init__(
        self,
        *,
        redis_url: str,
        channel: str,
        ping_every_s: float = 0.5,
        dead_after_s: float = 2.0,
        retry_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        on_lost: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < ping_every_s < dead_after_s:
            raise ValueError("need 0 < ping_every_s < dead_after_s")
        if retry_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("retry_s and connect_timeout_s must be > 0")
        self.channel = channel
        self._ping_every_s = ping_every_s
        self._dead_after_s = dead_after_s
        self._retry_s = retry_s
        self._publish_timeout_s = connect_timeout_s
        self._on_lost = on_lost
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            redis_url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=dead_after_s,
        )
        self._caches: dict[str, Subscriber] = {}
        self._heard = False
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.messages = 0
        #: Counts subscriptions: a load that saw another epoch start may have missed
        #: an invalidation in between, so it must not fill L1.
        self.epoch = 0

    @property
    def heard(self) -> bool:
        """True while the subscription is confirmed and the connection alive."""
        return self._heard

    async def publish(self, message: bytes) -> int:
        """Send ``message`` on the channel (when there is no L2 to do it in the same
        round trip as its tombstones); the number of subscribers that heard it."""
        async with asyncio.timeout(self._publish_timeout_s):
            heard: int = await self._client.publish(self.channel, message)
        return heard

    def register(self, name: str, cache: Subscriber) -> None:
        if name in self._caches:
            raise ValueError(f"a cache named {name!r} is already registered")
        self._caches[name] = cache

    async def start(self, wait_s: float) -> bool:
        """Start listening; wait up to ``wait_s`` for the subscription (False if
        Redis does not answer by then: L1 stays bypassed until it does)."""
        self._task = asyncio.create_task(self._run(), name="sankofa-cache-bus")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._subscribed.wait()
        return self._heard

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._lost()
        await self._client.aclose()

    def _lost(self) -> None:
        was = self._heard
        self._heard = False
        self._subscribed.clear()
        for cache in self._caches.values():
            cache.clear_l1()
        if was:
            self._on_lost()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except L2_FAILURES as exc:
                if self._heard:
                    log.warning(
                        "cache invalidation channel lost (%s: %s); L1 bypassed until it is back",
                        type(exc).__name__,
                        exc,
                    )
                self._lost()
            except Exception:
                # Never let the listener die: without it L1 would stay bypassed for good.
                log.exception("cache invalidation listener failed; restarting it")
                self._lost()
            await asyncio.sleep(self._retry_s)

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._dead_after_s):
                await pubsub.subscribe(self.channel)
                while True:
                    msg = await pubsub.get_message(timeout=self._dead_after_s)
                    if msg is not None and msg["type"] == "subscribe":
                        break
            # Anything published before now was missed: start from an empty L1.
            for cache in self._caches.values():
                cache.clear_l1()
            self.epoch += 1
            self._heard = True
            self._subscribed.set()
            last_heard = last_ping = self._clock()
            while True:
                msg = await pubsub.get_message(timeout=self._ping_every_s)
                now = self._clock()
                if msg is not None:
                    last_heard = now
                    if msg["type"] == "message":
                        self._deliver(msg["data"])
                elif now - last_heard > self._dead_after_s:
                    raise TimeoutError(f"nothing heard for {self._dead_after_s:g} s")
                if now - last_ping >= self._ping_every_s:
                    await pubsub.ping(_PING_PAYLOAD)
                    last_ping = now
        finally:
            with contextlib.suppress(*L2_FAILURES):
                await pubsub.aclose()

    def _deliver(self, data: Any) -> None:
        try:
            msg = orjson.loads(data)
            name, keys = msg["c"], msg["k"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed cache invalidation message")
            return
        cache = self._caches.get(name)
        if cache is not None and isinstance(keys, list):
            self.messages += 1
            cache.drop_remote([k for k in keys if isinstance(k, str)])


def invalidation_message(cache: str, keys: Sequence[str]) -> bytes:
    return orjson.dumps({"c": cache, "k": list(keys)})
