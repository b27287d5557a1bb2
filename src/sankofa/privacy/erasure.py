"""Erasure of a data subject's personal data, and the retention limit (LGPD).

What is personal in a stored transaction: the customer's ref (a keyed HMAC of
``customer_id``: pseudonymised data is still personal data under LGPD art. 12
and 13), the device and IP refs, the card token and last four digits, and the
free-form ``metadata``. What is kept: the transaction id, time, amount,
currency, terminal, type, channel, the content hash (a keyed digest, needed to
answer a retry) and the whole decision (score, reasons, model version, feature
vector, priority, timings), which BACEN rules and the right to an explanation
of an automated decision (LGPD art. 20) require to be kept; the label too.

Erased rows get ``customer_ref = 'erased:' || transaction_id``: no longer
linkable to each other or to the person, and a feature rebuild counts each as a
customer of its own (terminal histories stay exact). ``personal_data_erased_at``
says when.

Both run in one database transaction with their audit record (kinds
``erasure`` and ``retention``); the record names no person (see ``subject_proof``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from sankofa.store import audit

_STRIP: Final = """
    customer_ref = 'erased:' || transaction_id,
    device_ref = NULL,
    ip_ref = NULL,
    metadata = NULL,
    card_token = NULL,
    card_last4 = NULL,
    personal_data_erased_at = now()
"""
#: Retention works through the rows in windows of received time, one
#: transaction each: row locks and WAL stay bounded whatever the backlog.
RETENTION_WINDOW: Final = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class Erasure:
    erasure_id: str
    transactions: int
    audit_seq: int
    #: The erased transactions' ids: a cache of their stored views must drop them.
    transaction_ids: tuple[str, ...] = ()


async def erase_customer(
    conn: asyncpg.Connection,
    *,
    customer_ref: str,
    subject_proof: str,
    actor: str | None,
    request_ref: str | None = None,
) -> Erasure:
    """Strip the personal data of every transaction of ``customer_ref``, and record it.

    ``subject_proof``: the subject's identifier keyed in a domain of its own
    (``pseudonymise("erasure", id)``): it lets the controller show, given the
    identifier again, that this erasure was done, yet joins nothing stored.
    """
    erasure_id = str(uuid.uuid4())
    async with conn.transaction():
        ids = [
            r["transaction_id"]
            for r in await conn.fetch(
                f"UPDATE transactions SET {_STRIP} WHERE customer_ref = $1"
                " RETURNING transaction_id",
                customer_ref,
            )
        ]
        n = len(ids)
        seq = await audit.record(
            conn,
            "erasure",
            actor,
            {
                "erasure_id": erasure_id,
                "subject": subject_proof,
                "transactions": n,
                "request_ref": request_ref,
            },
        )
    return Erasure(erasure_id, n, seq, tuple(ids))


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: datetime
    transactions: int
    windows: int
    audit_seqs: list[int]

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "transactions": self.transactions,
            "windows": self.windows,
            "audit_seqs": self.audit_seqs,
        }


async def enforce_retention(
    conn: asyncpg.Connection, *, days: int, actor: str | None = None, dry_run: bool = False
) -> RetentionReport:
    """Strip the personal data of every transaction received more than ``days`` ago.

    Safe to run at any time and twice; each window that changed rows leaves one
    ``retention`` audit record.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    cutoff: datetime = await conn.fetchval(
        "SELECT date_trunc('second', now()) - make_interval(days => $1)", days
    )
    first: datetime | None = await conn.fetchval(
        "SELECT min(received_at) FROM transactions"
        " WHERE received_at < $1 AND personal_data_erased_at IS NULL",
        cutoff,
    )
    if first is None:
        return RetentionReport(cutoff, 0, 0, [])
    if dry_run:
        n = await conn.fetchval(
            "SELECT count(*) FROM transactions"
            " WHERE received_at < $1 AND personal_data_erased_at IS NULL",
            cutoff,
        )
        return RetentionReport(cutoff, int(n), 0, [])
    total, windows, seqs = 0, 0, []
    start = first
    while start < cutoff:
        end = min(start + RETENTION_WINDOW, cutoff)
        async with conn.transaction():
            n = await conn.fetchval(
                f"WITH e AS (UPDATE transactions SET {_STRIP}"
                " WHERE received_at >= $1 AND received_at < $2"
                " AND personal_data_erased_at IS NULL RETURNING 1) SELECT count(*) FROM e",
                start,
                end,
            )
            if n:
                seqs.append(
                    await audit.record(
                        conn,
                        "retention",
                        actor,
                        {
                            "retention_days": days,
                            "received_from": start.isoformat(),
                            "received_before": end.isoformat(),
                            "transactions": n,
                        },
                    )
                )
        total += int(n)
        windows += 1
        start = end
    return RetentionReport(cutoff, total, windows, seqs)
