"""Reads and writes of transactions (with their decisions) and labels.

Writes happen once per batch, inside the caller's transaction, with one COPY
(the fastest path into PostgreSQL; the rare id race is caught as a unique
violation by the caller). Reads are by primary key.

A decided transaction is one row: what was received and what was decided
(and what a shadow model would have decided), in the column order of
``COLUMNS``. The feature vector is stored as big-endian
float8 bytes (PostgreSQL's own float8send order), 8 bytes per feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from sankofa.engine.transaction import Transaction
from sankofa.errors import FieldIssue, InvalidFieldError

COLUMNS: Final = (
    "transaction_id",
    "event_time",
    "utc_offset_s",
    "amount_cents",
    "currency",
    "customer_ref",
    "terminal_id",
    "tx_type",
    "channel",
    "device_ref",
    "ip_ref",
    "metadata",
    "content_hash",
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
    # The shadow (challenger) model's view of the same transaction (0002); NULL without one.
    "shadow_risk_score",
    "shadow_decision",
    "shadow_model_version",
    # PCI DSS (0005): the card's keyed HMAC token and last four digits; never the PAN.
    "card_token",
    "card_last4",
    # The rules that matched (0003): active ones, then shadow ones; NULL for none.
    "rule_hits",
    "shadow_rule_hits",
)
#: dtype of a stored feature vector's elements.
FEATURE_DTYPE: Final = np.dtype(">f8")

#: A row for COPY, in ``COLUMNS`` order.
Record = tuple[Any, ...]


def encode_features(x: npt.NDArray[np.float64]) -> list[bytes]:
    """Each row of an (n, k) matrix as the bytes stored in ``features``."""
    data = np.ascontiguousarray(x, dtype=FEATURE_DTYPE).tobytes()
    width = x.shape[1] * FEATURE_DTYPE.itemsize
    return [data[i : i + width] for i in range(0, len(data), width)]


def decode_features(stored: bytes) -> list[float]:
    values: list[float] = np.frombuffer(stored, dtype=FEATURE_DTYPE).tolist()
    return values


def metadata_json(tx: Transaction) -> str | None:
    return None if tx.metadata is None else orjson.dumps(tx.metadata).decode()


def record(
    tx: Transaction,
    *,
    decision: str,
    risk_score: float,
    risk_level: str,
    reasons: list[str],
    model_version: str,
    features: bytes,
    priority: str,
    queue_ms: float,
    processing_ms: float,
    batch_size: int,
    shadow_risk_score: float | None = None,
    shadow_decision: str | None = None,
    shadow_model_version: str | None = None,
    rule_hits: list[str] | None = None,
    shadow_rule_hits: list[str] | None = None,
) -> Record:
    """One row, in ``COLUMNS`` order (the scorer builds the same tuple inline)."""
    return (
        tx.transaction_id,
        tx.timestamp,
        tx.utc_offset_s,
        tx.amount_cents,
        tx.currency,
        tx.customer_ref,
        tx.terminal_id,
        tx.type,
        tx.channel,
        tx.device_ref,
        tx.ip_ref,
        metadata_json(tx),
        tx.content_hash,
        decision,
        risk_score,
        risk_level,
        reasons,
        model_version,
        features,
        priority,
        queue_ms,
        processing_ms,
        batch_size,
        shadow_risk_score,
        shadow_decision,
        shadow_model_version,
        tx.card_token,
        tx.card_last4,
        rule_hits,
        shadow_rule_hits,
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


async def find_existing(
    conn: asyncpg.Connection, transaction_ids: Sequence[str]
) -> dict[str, StoredDecision]:
    rows = await conn.fetch(
        """
        SELECT transaction_id, content_hash, decision, risk_score, risk_level, reasons,
               model_version, priority, queue_ms, processing_ms, batch_size
        FROM transactions WHERE transaction_id = ANY($1::text[])
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


async def insert_batch(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    if records:
        await conn.copy_records_to_table("transactions", records=records, columns=COLUMNS)


_INSERT: Final = (
    f"INSERT INTO transactions ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)


async def insert_one(conn: asyncpg.Connection, row: Record) -> None:
    """A plain INSERT: the naive baseline's way of storing (see api.bench_routes)."""
    await conn.execute(_INSERT, *row)


async def get_transaction(conn: asyncpg.Connection, transaction_id: str) -> dict[str, Any] | None:
    r = await conn.fetchrow(
        """
        SELECT t.*, l.fraud AS label_fraud, l.labelled_at
        FROM transactions t LEFT JOIN labels l USING (transaction_id)
        WHERE t.transaction_id = $1
        """,
        transaction_id,
    )
    if r is None:
        return None
    out = dict(r)
    if out["metadata"] is not None:
        out["metadata"] = orjson.loads(out["metadata"])
    out["features"] = decode_features(out["features"])
    return out


async def get_transactions(
    conn: asyncpg.Connection, transaction_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``get_transaction`` for many ids in one query: the rows found, by id."""
    rows = await conn.fetch(
        """
        SELECT t.*, l.fraud AS label_fraud, l.labelled_at
        FROM transactions t LEFT JOIN labels l USING (transaction_id)
        WHERE t.transaction_id = ANY($1::text[])
        """,
        list(transaction_ids),
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        row = dict(r)
        if row["metadata"] is not None:
            row["metadata"] = orjson.loads(row["metadata"])
        row["features"] = decode_features(row["features"])
        out[row["transaction_id"]] = row
    return out


@dataclass(frozen=True, slots=True)
class LabelIn:
    transaction_id: str
    fraud: bool
    labelled_at: datetime
    #: False: the client sent none and ``labelled_at`` is the time it arrived.
    labelled_at_given: bool = True


async def store_labels(
    conn: asyncpg.Connection, labels: Sequence[LabelIn]
) -> tuple[list[tuple[str, str, float, bool]], list[int]]:
    """Upsert labels (a later ``labelled_at`` wins). Returns, for the feature store,
    (terminal_id, transaction_id, event_time_s, fraud) of the labels now in force,
    and the indexes of labels naming unknown transactions (nothing is stored then).
    A label dated before its transaction raises InvalidFieldError (nothing is
    stored); one whose ``labelled_at`` was not given is dated no earlier than it.
    """
    ids = [lb.transaction_id for lb in labels]
    known = await conn.fetch(
        "SELECT transaction_id, terminal_id, extract(epoch FROM event_time)::float8 AS t,"
        " event_time FROM transactions WHERE transaction_id = ANY($1::text[])",
        ids,
    )
    where = {r["transaction_id"]: (r["terminal_id"], r["t"]) for r in known}
    unknown = [i for i, tid in enumerate(ids) if tid not in where]
    if unknown:
        return [], unknown
    event_time = {r["transaction_id"]: r["event_time"] for r in known}
    labelled_at = [max(lb.labelled_at, event_time[lb.transaction_id]) for lb in labels]
    early = [
        i
        for i, lb in enumerate(labels)
        if lb.labelled_at_given and lb.labelled_at != labelled_at[i]
    ]
    if early:
        # Checked before anything is written: the request stores nothing.
        raise InvalidFieldError(
            [
                FieldIssue(
                    f"labels[{i}].labelled_at",
                    "precedes the transaction's timestamp"
                    f" ({event_time[labels[i].transaction_id].isoformat()}); a label cannot"
                    " be known before its transaction happened",
                )
                for i in early
            ]
        )
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
        labelled_at,
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
