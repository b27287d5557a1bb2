"""Rebuild the online features in Redis from PostgreSQL, which holds every
transaction and label.

Redis is a cache of the recent past: each customer's and terminal's history
over the longest window (plus the grace for late arrivals). When Redis loses
it (restarted empty, flushed, failed over to a replica that lagged) the rows
in PostgreSQL say what it held. The rebuild feeds every stored transaction
that a window can still reach, in event-time order, through the same
``FeatureStore.compute`` the service uses, then sets the labels that are
known, with the same ``apply_labels``. Both are idempotent per transaction
id, so a rebuild can run beside live traffic, be interrupted and run again:
what is already there is not counted twice.

When it finishes it sets a marker key: a Redis that answers without the
marker has lost (or never had) its histories. The service rebuilds by itself
(``engine.feature_guard``); operators can run it as ``sankofa features rebuild``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import asyncpg

from sankofa.engine import constants as C
from sankofa.engine.features_online import (
    CUSTOMER_HORIZON_S,
    TERMINAL_HORIZON_S,
    FeatureStore,
    RedisClient,
)
from sankofa.engine.transaction import Transaction

log = logging.getLogger(__name__)

#: How far behind the newest stored transaction a history reaches (the longest
#: window, and the grace kept for late arrivals): nothing older is in Redis.
REACH_S: Final = max(CUSTOMER_HORIZON_S, TERMINAL_HORIZON_S) + C.FEATURE_TRIM_GRACE_S

_COLUMNS: Final = (
    "transaction_id, event_time, utc_offset_s, amount_cents, currency, customer_ref,"
    " terminal_id, tx_type, channel, device_ref, ip_ref, content_hash"
)


def marker_key(prefix: str) -> str:
    """The key that says the histories under ``prefix`` are complete, on one Redis
    server (a cluster's key names its slot groups too: ``FeatureStore.marker_key``)."""
    return f"{prefix}:{C.REDIS_LAYOUT}:built"


@dataclass(frozen=True, slots=True)
class RebuildReport:
    since: datetime | None
    transactions: int
    labels: int
    labels_applied: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "transactions": self.transactions,
            "labels": self.labels,
            "labels_applied": self.labels_applied,
            "seconds": round(self.seconds, 3),
        }


def transaction_of(row: asyncpg.Record) -> Transaction:
    """A stored row as the Transaction the service scored (identifiers already keyed)."""
    offset = timezone(timedelta(seconds=row["utc_offset_s"]))
    event_time: datetime = row["event_time"]
    cents: int = row["amount_cents"]
    return Transaction(
        transaction_id=row["transaction_id"],
        timestamp=event_time.astimezone(offset),
        event_time_s=event_time.timestamp(),
        utc_offset_s=row["utc_offset_s"],
        amount=Decimal(cents).scaleb(-2),
        amount_cents=cents,
        currency=row["currency"],
        customer_ref=row["customer_ref"],
        terminal_id=row["terminal_id"],
        type=row["tx_type"],
        channel=row["channel"],
        device_ref=row["device_ref"],
        ip_ref=row["ip_ref"],
        metadata=None,
        content_hash=bytes(row["content_hash"]),
    )


async def rebuild(
    pool: asyncpg.Pool,
    store: FeatureStore,
    redis: RedisClient,
    prefix: str,
    *,
    batch: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Put back every history a window can reach, then the marker.

    ``progress(done, total)`` is called after each batch of transactions.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    started = time.monotonic()
    # The marker holds this instant: every transaction committed before it is in
    # the snapshot read below (feature_guard compares it with its misses).
    snapshot_after = time.time()
    async with pool.acquire() as conn:
        newest: datetime | None = await conn.fetchval("SELECT max(event_time) FROM transactions")
        if newest is None:
            await redis.set(store.marker_key, f"{snapshot_after:.6f}")
            return RebuildReport(None, 0, 0, 0, time.monotonic() - started)
        since = newest - timedelta(seconds=REACH_S)
        total: int = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE event_time >= $1", since
        )
        done = 0
        # Event-time order, and within a second the order they were stored in:
        # the order the service counted them in (a COPY keeps its batch's order).
        query = (
            f"SELECT {_COLUMNS} FROM transactions WHERE event_time >= $1"
            " ORDER BY event_time, received_at, ctid"
        )
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            cursor = await conn.cursor(query, since)
            while rows := await cursor.fetch(batch):
                await store.compute([transaction_of(r) for r in rows])
                done += len(rows)
                if progress is not None:
                    progress(done, total)
            labels = await conn.fetch(
                "SELECT t.terminal_id, l.transaction_id,"
                " extract(epoch FROM t.event_time)::float8 AS t, l.fraud"
                " FROM labels l JOIN transactions t USING (transaction_id)"
                " WHERE t.event_time >= $1",
                since,
            )
    applied = 0
    for i in range(0, len(labels), batch):
        chunk = labels[i : i + batch]
        applied += await store.apply_labels(
            [(r["terminal_id"], r["transaction_id"], r["t"], r["fraud"]) for r in chunk]
        )
    await redis.set(store.marker_key, f"{snapshot_after:.6f}")
    report = RebuildReport(since, done, len(labels), applied, time.monotonic() - started)
    log.info("online features rebuilt from PostgreSQL: %s", report.as_dict())
    return report


def run_rebuild(args: Any) -> int:
    """``sankofa features rebuild``: the service's settings, a progress line, a report."""
    import asyncio
    import json
    import sys

    from sankofa.embedded import EmbeddedUnavailableError, embedded_servers
    from sankofa.settings import Settings
    from sankofa.store.db import create_pool

    settings = Settings()

    def show(done: int, total: int) -> None:
        print(f"\rrebuilding: {done:,} / {total:,} transactions", end="", file=sys.stderr)

    async def run(database_url: str, redis_url: str) -> RebuildReport:
        from sankofa.engine.features_cluster import feature_store, redis_client

        timeout_s = max(settings.redis_timeout_s, 30.0)
        redis = redis_client(
            redis_url, cluster=settings.redis_cluster, max_connections=4, timeout_s=timeout_s
        )
        pool = await create_pool(
            database_url, min_size=1, max_size=1, timeout_s=settings.db_timeout_s
        )
        try:
            store = feature_store(
                redis,
                prefix=settings.redis_prefix,
                timeout_s=timeout_s,
                key_ttl_s=settings.feature_key_ttl_s,
                slot_groups=settings.redis_cluster_slot_groups,
            )
            return await rebuild(
                pool, store, redis, settings.redis_prefix, batch=args.batch, progress=show
            )
        finally:
            await pool.close()
            await redis.aclose()

    try:
        with embedded_servers(
            settings.data_dir,
            need_database=settings.database_url is None,
            need_redis=settings.redis_url is None,
        ) as urls:
            database_url = settings.database_url or urls.database_url
            redis_url = settings.redis_url or urls.redis_url
            assert database_url is not None and redis_url is not None
            report = asyncio.run(run(database_url, redis_url))
    except EmbeddedUnavailableError as exc:
        print(f"sankofa features rebuild: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    print(json.dumps(report.as_dict()))
    return 0
