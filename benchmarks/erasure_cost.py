"""What an erasure and a retention pass cost on a large table: N synthetic
decided transactions (customers c0..c4999, received over the last 400 days),
then one erasure (a scan: there is no index on customer_ref, so that no batch
pays for one) and a retention pass at 365 days.

    SANKOFA_DATABASE_URL=postgresql://postgres@127.0.0.1/<scratch db> \\
        .venv/bin/python benchmarks/erasure_cost.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from sankofa.privacy.erasure import enforce_retention, erase_customer
from sankofa.store.db import migrate


async def measure(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        t0 = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO transactions (transaction_id, event_time, utc_offset_s, amount_cents,
                currency, customer_ref, terminal_id, tx_type, device_ref, metadata, content_hash,
                decision, risk_score, risk_level, reasons, model_version, features, priority,
                queue_ms, processing_ms, batch_size, received_at)
            SELECT 'ec' || i, now(), 0, 100, 'BRL', 'c' || (i % 5000), 't' || (i % 9000), 'card',
                   'd' || i, '{"k": "v"}', '\\x00', 'approve', 0.1, 'LOW', '{AMOUNT}', 'm@1',
                   '\\x', 'normal', 0, 0, 1,
                   now() - make_interval(secs => (i::float8 / $1) * 400 * 86400)
            FROM generate_series(1, $1) i
            ORDER BY i DESC
            """,
            rows,
        )
        await conn.execute("VACUUM ANALYZE transactions")
        print(f"loaded {rows:,} rows in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        done = await erase_customer(conn, customer_ref="c42", subject_proof="x", actor="bench")
        print(f"erasure: {done.transactions} rows in {(time.perf_counter() - t0) * 1000:.0f} ms")
        t0 = time.perf_counter()
        rep = await enforce_retention(conn, days=365, actor="bench")
        print(
            f"retention at 365 days: {rep.transactions:,} rows in {rep.windows} windows,"
            f" {time.perf_counter() - t0:.1f} s"
        )
        t0 = time.perf_counter()
        rep = await enforce_retention(conn, days=365, actor="bench")
        print(
            f"retention again: {rep.transactions} rows, {(time.perf_counter() - t0) * 1000:.0f} ms"
        )
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args()
    url = os.environ.get("SANKOFA_DATABASE_URL")
    if not url:
        raise SystemExit("set SANKOFA_DATABASE_URL (a scratch database)")
    asyncio.run(measure(url, args.rows))


if __name__ == "__main__":
    main()
