"""Reads and writes of transactions, decisions and labels.

Writes happen once per batch, inside the caller's transaction, with COPY (the
fastest path into PostgreSQL; the rare id race is caught as a unique violation
by the caller). Reads are by primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from sankofa.engine.transaction import Transaction

TX_COLUMNS: Final = (
    "transaction_id",
    "event_time",
    "utc_offset_s",
    "amount",
    "currency",
    "customer_ref",
    "terminal_id",
    "tx_type",
    "channel",
    "device_ref",
    "ip_ref",
    "metadata",
    "content_hash",
)
DECISION_COLUMNS: Final = (
    "transaction_id",
    "decision",
    "risk_score",
    "risk_level",
    "reasons",
    "model_version",
    "features",
    "priority",
    "queue_ms",
    "processing_ms",
    "batch_size",
)


@dataclass(frozen=True, slots=True)
class StoredDecision:
    transaction_id: str
    content_hash: bytes
    decision: str
    risk_score: float
    risk_level: str
    reasons: list[str]
    model_version: str
    priority: str
    queue_ms: float
    processing_ms: float
    batch_size: int


@dataclass(frozen=True, slots=True)
class DecisionRow:
    transaction_id: str
    decision: str
    risk_score: float
    risk_level: str
    reasons: list[str]
    model_version: str
    features: list[float]
    priority: str
    queue_ms: float
    processing_ms: float
    batch_size: int


async def find_existing(
    conn: asyncpg.Connection, transaction_ids: Sequence[str]
) -> dict[str, StoredDecision]:
    rows = await conn.fetch(
        """
        SELECT t.transaction_id, t.content_hash, d.decision, d.risk_score, d.risk_level,
               d.reasons, d.model_version, d.priority, d.queue_ms, d.processing_ms, d.batch_size
        FROM transactions t JOIN decisions d USING (transaction_id)
        WHERE t.transaction_id = ANY($1::text[])
        """,
        list(transaction_ids),
    )
    return {
        r["transaction_id"]: StoredDecision(
            transaction_id=r["transaction_id"],
            content_hash=bytes(r["content_hash"]),
            decision=r["decision"],
            risk_score=r["risk_score"],
            risk_level=r["risk_level"],
            reasons=list(r["reasons"]),
            model_version=r["model_version"],
            priority=r["priority"],
            queue_ms=r["queue_ms"],
            processing_ms=r["processing_ms"],
            batch_size=r["batch_size"],
        )
        for r in rows
    }


async def insert_batch(
    conn: asyncpg.Connection, txs: Sequence[Transaction], decisions: Sequence[DecisionRow]
) -> None:
    if not txs:
        return
    tx_records = [_tx_record(tx) for tx in txs]
    d_records = [_decision_record(d) for d in decisions]
    await conn.copy_records_to_table("transactions", records=tx_records, columns=TX_COLUMNS)
    await conn.copy_records_to_table("decisions", records=d_records, columns=DECISION_COLUMNS)


def _tx_record(tx: Transaction) -> tuple[Any, ...]:
    return (
        tx.transaction_id,
        tx.timestamp,
        tx.utc_offset_s,
        tx.amount,
        tx.currency,
        tx.customer_ref,
        tx.terminal_id,
        tx.type,
        tx.channel,
        tx.device_ref,
        tx.ip_ref,
        None if tx.metadata is None else orjson.dumps(tx.metadata).decode(),
        tx.content_hash,
    )


def _decision_record(d: DecisionRow) -> tuple[Any, ...]:
    return (
        d.transaction_id,
        d.decision,
        d.risk_score,
        d.risk_level,
        d.reasons,
        d.model_version,
        d.features,
        d.priority,
        d.queue_ms,
        d.processing_ms,
        d.batch_size,
    )


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


_INSERT_TX: Final = _insert_sql("transactions", TX_COLUMNS)
_INSERT_DECISION: Final = _insert_sql("decisions", DECISION_COLUMNS)


async def insert_one(conn: asyncpg.Connection, tx: Transaction, decision: DecisionRow) -> None:
    """Two plain INSERTs: the naive baseline's way of storing (see api.bench_routes)."""
    await conn.execute(_INSERT_TX, *_tx_record(tx))
    await conn.execute(_INSERT_DECISION, *_decision_record(decision))


async def get_transaction(conn: asyncpg.Connection, transaction_id: str) -> dict[str, Any] | None:
    r = await conn.fetchrow(
        """
        SELECT t.*, d.decision, d.risk_score, d.risk_level, d.reasons, d.model_version,
               d.features, d.priority, d.queue_ms, d.processing_ms, d.batch_size, d.decided_at,
               l.fraud AS label_fraud, l.labelled_at
        FROM transactions t
        JOIN decisions d USING (transaction_id)
        LEFT JOIN labels l USING (transaction_id)
        WHERE t.transaction_id = $1
        """,
        transaction_id,
    )
    if r is None:
        return None
    out = dict(r)
    if out["metadata"] is not None:
        out["metadata"] = orjson.loads(out["metadata"])
    return out


@dataclass(frozen=True, slots=True)
class LabelIn:
    transaction_id: str
    fraud: bool
    labelled_at: datetime


async def store_labels(
    conn: asyncpg.Connection, labels: Sequence[LabelIn]
) -> tuple[list[tuple[str, str, float, bool]], list[int]]:
    """Upsert labels (a later ``labelled_at`` wins). Returns, for the feature store,
    (terminal_id, transaction_id, event_time_s, fraud) of the labels now in force,
    and the indexes of labels naming unknown transactions (nothing is stored then).
    """
    ids = [lb.transaction_id for lb in labels]
    known = await conn.fetch(
        "SELECT transaction_id, terminal_id, extract(epoch FROM event_time)::float8 AS t"
        " FROM transactions WHERE transaction_id = ANY($1::text[])",
        ids,
    )
    where = {r["transaction_id"]: (r["terminal_id"], r["t"]) for r in known}
    unknown = [i for i, tid in enumerate(ids) if tid not in where]
    if unknown:
        return [], unknown
    rows = await conn.fetch(
        """
        INSERT INTO labels (transaction_id, fraud, labelled_at)
        SELECT * FROM unnest($1::text[], $2::boolean[], $3::timestamptz[])
        ON CONFLICT (transaction_id) DO UPDATE
            SET fraud = EXCLUDED.fraud, labelled_at = EXCLUDED.labelled_at, received_at = now()
            WHERE labels.labelled_at <= EXCLUDED.labelled_at
        RETURNING transaction_id, fraud
        """,
        ids,
        [lb.fraud for lb in labels],
        [lb.labelled_at for lb in labels],
    )
    return [
        (
            where[r["transaction_id"]][0],
            r["transaction_id"],
            where[r["transaction_id"]][1],
            r["fraud"],
        )
        for r in rows
    ], []
