"""What rules, lists and limits add to one batch of the scoring engine, with real
PostgreSQL and Redis: ``engine.handle`` per batch, as benchmarks/batch_cost.py
measures it (same transactions), with or without a realistic configuration.

    SANKOFA_DATABASE_URL=postgresql://postgres@127.0.0.1/<scratch db> \\
    SANKOFA_REDIS_URL=redis://127.0.0.1:6379/5 \\
    .venv/bin/python benchmarks/rules_batch_cost.py [--configured] [--sizes 256,1000]

``--configured`` first stores ``sankofa.rules.examples.SAMPLE_RULES`` (ten active, five shadow), 10,000 hot
terminals, 10,000 allow-listed customers and 1,000 customers with their own
limits, about one transaction in twenty of each batch touching one of them.
Without it, the same engine with nothing configured (the lists and limits are
still read, once per batch, and the default night PIX limit applied).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from typing import Any

from sankofa.api.app import open_services
from sankofa.engine.scorer import ScoreRequest
from sankofa.queues.dispatcher import Job
from sankofa.queues.priority import Priority
from sankofa.settings import Settings


async def configure(services: Any) -> None:
    # Imported here: without --configured this script also measures trees without
    # sankofa.rules (the "before" of docs/rules-and-cache.md).
    from sankofa.rules.examples import SAMPLE_RULES

    parse = services.parser.pseudonymise
    async with services.pool.acquire() as conn:
        await conn.execute("TRUNCATE rule_versions, list_entries, customer_limits")
        await conn.executemany(
            "INSERT INTO rule_versions (rule_id, version, action, priority, mode, expression)"
            " VALUES ($1, 1, $2, $3, $4, $5)",
            [(r, a, 10 * k, m, e) for k, (r, a, m, e) in enumerate(SAMPLE_RULES)],
        )
        # Every 20th terminal of the benchmark's 9000 is hot; every 20th customer of
        # its 5000 allowed (others than the hot terminals' payers); the rest of the entries name nobody in the batches.
        await conn.executemany(
            "INSERT INTO list_entries (kind, value_ref, list, reason) VALUES ($1, $2, $3, $4)",
            [
                ("terminal", f"t{i * 20}" if i < 450 else f"x{i}", "hot", "bench")
                for i in range(10_000)
            ]
            + [
                (
                    "customer",
                    parse("customer", f"c{i * 20 + 7}" if i < 250 else f"y{i}"),
                    "allow",
                    "b",
                )
                for i in range(10_000)
            ],
        )
        await conn.executemany(
            "INSERT INTO customer_limits (customer_ref, night_pix_limit_cents) VALUES ($1, $2)",
            [(parse("customer", f"c{i * 5 + 1}"), 500_000) for i in range(1000)],
        )
    await services.rules.book.refresh(force=True)


async def measure(sizes: tuple[int, ...], configured: bool) -> list[dict[str, Any]]:
    settings = Settings(
        environment="test",
        redis_prefix=f"rb{secrets.token_hex(3)}",
        hmac_key="benchmark-hmac-key-0123456789",
    )
    rows = []
    async with open_services(settings) as services:
        if configured:
            await configure(services)
        loop = asyncio.get_running_loop()
        run = secrets.token_hex(3)
        k = 0
        for n in sizes:
            reps = max(10, 3000 // n)
            batches = []
            for _ in range(reps):
                jobs = []
                for _ in range(n):
                    k += 1
                    tx = services.parser.parse(
                        {
                            "transaction_id": f"rb{run}-{k}",
                            "timestamp": f"2018-04-01T10:{k // 60 % 60:02d}:{k % 60:02d}-03:00",
                            "amount": "48.70",
                            "customer_id": f"c{k % 5000}",
                            "terminal_id": f"t{k % 9000}",
                            "type": ("pix", "card", "card")[k % 3],
                        }
                    )
                    now = loop.time()
                    jobs.append(
                        Job(
                            payload=ScoreRequest([tx]),
                            size=1,
                            priority=Priority.NORMAL,
                            enqueued_at=now,
                            deadline=now + 60,
                            future=loop.create_future(),
                        )
                    )
                batches.append(jobs)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            decided: dict[str, int] = {}
            for jobs in batches:
                for result in await services.engine.handle(jobs):
                    assert isinstance(result, list), result
                    for d in result:
                        key = d["reasons"][0].split(":")[0] if configured else d["decision"]
                        decided[key] = decided.get(key, 0) + 1
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            rows.append(
                {
                    "batch_size": n,
                    "batches": reps,
                    "wall_ms_per_batch": round(wall / reps * 1000, 3),
                    "cpu_ms_per_batch": round(cpu / reps * 1000, 3),
                    "cpu_us_per_transaction": round(cpu / reps / n * 1e6, 1),
                    "first_reasons": decided,
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configured", action="store_true", help="store rules, lists and limits first")
    p.add_argument("--sizes", default="256,1000")
    args = p.parse_args()
    if not os.environ.get("SANKOFA_DATABASE_URL") or not os.environ.get("SANKOFA_REDIS_URL"):
        raise SystemExit("set SANKOFA_DATABASE_URL and SANKOFA_REDIS_URL (scratch ones)")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = asyncio.run(measure(sizes, args.configured))
    print("| batch size | wall ms / batch | service CPU ms / batch | CPU us / transaction |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['wall_ms_per_batch']} | {r['cpu_ms_per_batch']}"
            f" | {r['cpu_us_per_transaction']} |"
        )
    for r in rows:
        print(f"batch {r['batch_size']}: first reasons / decisions {r['first_reasons']}")


if __name__ == "__main__":
    main()
