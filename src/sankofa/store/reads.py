"""Where reads go: the streaming replica when one is configured, and the
primary whenever the replica cannot answer for sure. Writes never come here:
they take the primary pool directly.

A read tried on the replica ends in one of three ways:

- found: the replica's answer is the answer;
- not found: the replica may lag behind a write the client has already been
  answered 200 for (read-your-writes), so the primary is asked before anyone
  is told "no such thing" (fallback reason ``not_found``);
- failed (down, an error, slower than ``replica_timeout_s``): the primary
  answers (reason ``error``), and the replica is left alone for ``retry_s``
  (reason ``skipped``), so that a dead or black-holed replica costs one
  timeout now and then, not one per request.

A replica failure therefore never becomes an error for the client while the
primary can answer; a primary failure is the caller's to report, as before.

Reports (``sankofa shadow report``, ``sankofa features compare``) open a single
connection with ``connect_for_reads``: the replica, else the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeVar

import asyncpg

from sankofa.store.db import discard_on_failure

log = logging.getLogger(__name__)

T = TypeVar("T")
ReplicaState = Literal["ok", "unavailable", "not_configured"]
FallbackReason = Literal["not_found", "error", "skipped"]

#: What a replica can fail with that the primary may well not: the server gone
#: or refusing, a query cancelled by a recovery conflict, a schema the replica
#: has not replayed yet, a connection left mid-operation, a timeout.
REPLICA_FAILURES: Final[tuple[type[BaseException], ...]] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


class ReadPools:
    """Runs read-only queries on the replica pool, falling back to the primary's.

    ``on_fallback(reason)`` and ``on_read(server)`` are called for each fallback
    and each answered read (the metrics); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None,
        primary_timeout_s: float,
        replica_timeout_s: float,
        retry_s: float,
        on_fallback: Callable[[FallbackReason], None] = lambda reason: None,
        on_read: Callable[[Literal["primary", "replica"]], None] = lambda server: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if primary_timeout_s <= 0:
            raise ValueError(f"primary_timeout_s must be > 0, got {primary_timeout_s}")
        if replica_timeout_s <= 0:
            raise ValueError(f"replica_timeout_s must be > 0, got {replica_timeout_s}")
        if retry_s < 0:
            raise ValueError(f"retry_s must be >= 0, got {retry_s}")
        self._primary = primary
        self._replica = replica
        self._primary_timeout_s = primary_timeout_s
        self._replica_timeout_s = replica_timeout_s
        self._retry_s = retry_s
        self._on_fallback = on_fallback
        self._on_read = on_read
        self._clock = clock
        self._skip_until = float("-inf")

    @property
    def replica(self) -> asyncpg.Pool | None:
        return self._replica

    async def fetch(self, query: Callable[[asyncpg.Connection], Awaitable[T | None]]) -> T | None:
        """``query``'s result, from the replica if it has one, else from the primary.

        ``query`` must be read-only and return None for "not found". Errors of the
        primary (``scorer.DB_DOWN`` and the like) reach the caller.
        """
        replica = self._replica
        if replica is not None:
            if self._clock() < self._skip_until:
                self._on_fallback("skipped")
            else:
                try:
                    async with asyncio.timeout(self._replica_timeout_s):
                        async with replica.acquire() as conn, discard_on_failure(conn):
                            found = await query(conn)
                except REPLICA_FAILURES as exc:
                    self._replica_failed(exc)
                    self._on_fallback("error")
                else:
                    if found is not None:
                        self._on_read("replica")
                        return found
                    self._on_fallback("not_found")
        async with asyncio.timeout(self._primary_timeout_s):
            async with self._primary.acquire() as conn:
                result = await query(conn)
        self._on_read("primary")
        return result

    async def replica_state(self, timeout_s: float) -> ReplicaState:
        """Whether the replica answers now (for readiness: reported, never required)."""
        replica = self._replica
        if replica is None:
            return "not_configured"
        try:
            async with asyncio.timeout(timeout_s):
                async with replica.acquire() as conn, discard_on_failure(conn):
                    await conn.fetchval("SELECT 1")
        except REPLICA_FAILURES as exc:
            self._replica_failed(exc)
            return "unavailable"
        # It answers again: reads may go back to it before the retry delay ends.
        self._skip_until = float("-inf")
        return "ok"

    def _replica_failed(self, exc: BaseException) -> None:
        if self._clock() >= self._skip_until:
            # Once per retry period, not once per request.
            log.warning(
                "replica unavailable (%s: %s); reading the primary for %.1f s",
                type(exc).__name__,
                exc,
                self._retry_s,
            )
        self._skip_until = self._clock() + self._retry_s


async def connect_for_reads(
    primary_url: str, replica_url: str | None, *, timeout_s: float
) -> asyncpg.Connection:
    """One connection for a read-only report: the replica's when it answers,
    else the primary's. A report on the replica may miss the last moments of
    writes (its replication lag); it never loads the primary meanwhile."""
    if replica_url is not None:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(replica_url, timeout=timeout_s)
            return conn
        except REPLICA_FAILURES as exc:
            log.warning(
                "replica unavailable (%s: %s); reading the primary", type(exc).__name__, exc
            )
    primary: asyncpg.Connection = await asyncpg.connect(primary_url, timeout=timeout_s)
    return primary
