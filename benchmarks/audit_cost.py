"""What the audit trail adds to storing a batch: the COPY of a batch of decided
transactions into ``transactions`` (its audit trigger appends one
``decision_batch`` record in the same statement) and into a copy of that table
with the same columns and indexes but no trigger, interleaved so that both see
the same machine load.

    SANKOFA_DATABASE_URL=postgresql://postgres@127.0.0.1/<scratch db> \\
        .venv/bin/python benchmarks/audit_cost.py [--reps 200]

Writes a markdown table (median and p90 wall time of the COPY, per batch size).
Creates the table ``transactions_noaudit`` in that database (drop it after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time

import asyncpg
import numpy as np
import orjson

from sankofa.engine.transaction import TransactionParser
from sankofa.store import repository as repo
from sankofa.store.db import migrate

SIZES = (1, 16, 256, 1000)


def _records(parser: TransactionParser, run: str, start: int, n: int) -> list[repo.Record]:
    feats = repo.encode_features(np.zeros((n, 18)))
    out = []
    for i in range(n):
        k = start + i
        tx = parser.parse(
            {
                "transaction_id": f"ac{run}-{k}",
                "timestamp": "2018-04-01T10:00:00-03:00",
                "amount": "48.70",
                "customer_id": f"c{k % 5000}",
                "terminal_id": f"t{k % 9000}",
                "card_number": "4111111111111111",
            }
        )
        out.append(
            repo.record(
                tx,
                decision="approve",
                risk_score=0.01,
                risk_level="LOW",
                reasons=["AMOUNT"],
                model_version="m@1",
                features=feats[i],
                priority="normal",
                queue_ms=0.1,
                processing_ms=1.0,
                batch_size=n,
            )
        )
    return out


async def measure(url: str, reps: int) -> list[tuple[int, float, float, float, float]]:
    conn = await asyncpg.connect(url)
    parser = TransactionParser(hmac_key=b"benchmark-hmac-key-0123456789", max_metadata_bytes=2048)
    run = secrets.token_hex(3)
    k = 0
    rows = []
    try:
        await migrate(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS transactions_noaudit (LIKE transactions INCLUDING ALL)"
        )
        for n in SIZES:
            times: dict[bool, list[float]] = {True: [], False: []}
            for rep in range(reps):
                for on in (rep % 2 == 0, rep % 2 == 1):
                    records = _records(parser, run, k, n)
                    k += n
                    table = "transactions" if on else "transactions_noaudit"
                    t0 = time.perf_counter()
                    await conn.copy_records_to_table(table, records=records, columns=repo.COLUMNS)
                    times[on].append(time.perf_counter() - t0)
            rows.append(
                (
                    n,
                    statistics.median(times[False]) * 1000,
                    statistics.median(times[True]) * 1000,
                    statistics.quantiles(times[False], n=10)[-1] * 1000,
                    statistics.quantiles(times[True], n=10)[-1] * 1000,
                )
            )
    finally:
        await conn.close()
    return rows


async def concurrent(url: str, writers: int, batches: int, n: int) -> dict[str, float]:
    """Batches per second with ``writers`` connections storing at once: every
    append waits for the head row, held until its writer commits."""
    parser = TransactionParser(hmac_key=b"benchmark-hmac-key-0123456789", max_metadata_bytes=2048)
    run = secrets.token_hex(3)
    conns = [await asyncpg.connect(url) for _ in range(writers)]
    out = {}
    try:
        for table in (
            "transactions_noaudit",
            "transactions",
            "transactions_noaudit",
            "transactions",
        ):
            work = [
                [_records(parser, f"{run}{table}{w}{len(out)}", b * n, n) for b in range(batches)]
                for w in range(writers)
            ]

            async def write(
                conn: asyncpg.Connection, mine: list[list[repo.Record]], t: str
            ) -> None:
                for records in mine:
                    await conn.copy_records_to_table(t, records=records, columns=repo.COLUMNS)

            t0 = time.perf_counter()
            await asyncio.gather(*(write(c, w, table) for c, w in zip(conns, work, strict=True)))
            rate = writers * batches / (time.perf_counter() - t0)
            key = "with audit" if table == "transactions" else "no audit"
            out[key] = max(out.get(key, 0.0), rate)
    finally:
        for c in conns:
            await c.close()
    return out


async def trigger_ms(url: str, rows: int = 1000, reps: int = 6) -> list[float]:
    """The trigger's own time inside PostgreSQL (EXPLAIN ANALYZE of a ``rows``-row
    INSERT, rolled back), on one connection: the first call compiles PL/pgSQL."""
    conn = await asyncpg.connect(url)
    cols = ", ".join(c for c in repo.COLUMNS)
    out = []
    try:
        for i in range(reps):
            tr = conn.transaction()
            await tr.start()
            try:
                plan = await conn.fetch(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO transactions ({cols})"
                    f" SELECT transaction_id || 'x{i}', {cols.split(', ', 1)[1]}"
                    f" FROM transactions_noaudit LIMIT {rows}"
                )
            finally:
                await tr.rollback()
            doc = orjson.loads(plan[0][0])[0]
            out += [t["Time"] for t in doc.get("Triggers", []) if "audit" in t["Trigger Name"]]
    finally:
        await conn.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=200, help="batches per size and mode")
    p.add_argument("--writers", type=int, default=4, help="concurrent writers (second table)")
    p.add_argument("--batch", type=int, default=256, help="rows per batch (second table)")
    args = p.parse_args()
    url = os.environ.get("SANKOFA_DATABASE_URL")
    if not url:
        raise SystemExit("set SANKOFA_DATABASE_URL (a scratch database)")
    rows = asyncio.run(measure(url, args.reps))
    print(
        "| batch size | COPY ms, no audit (median) | with audit (median) | added | p90 no audit | p90 with audit |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, off, on, off90, on90 in rows:
        print(f"| {n} | {off:.3f} | {on:.3f} | {on - off:+.3f} | {off90:.3f} | {on90:.3f} |")
    times = asyncio.run(trigger_ms(url))
    print()
    print("the trigger's own time for 1000 rows, ms (EXPLAIN ANALYZE; the first call")
    print("of a session compiles it):", ", ".join(f"{t:.2f}" for t in times))
    rates = asyncio.run(concurrent(url, args.writers, 50, args.batch))
    print()
    print(f"{args.writers} writers, batches of {args.batch}, best of two runs each:")
    print("| | batches / s | transactions / s |")
    print("|---|---:|---:|")
    for k, v in rates.items():
        print(f"| {k} | {v:.0f} | {v * args.batch:.0f} |")


if __name__ == "__main__":
    main()
