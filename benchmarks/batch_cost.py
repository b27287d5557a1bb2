"""What one batch costs the scoring engine, by batch size: wall time and CPU of the
service process (features in Redis, model, decision, COPY), with real PostgreSQL
and Redis. Shows the fixed cost per batch that micro-batching amortises.

    SANKOFA_DATABASE_URL=postgresql://postgres@127.0.0.1/<scratch db> \\
    SANKOFA_REDIS_URL=redis://127.0.0.1:6379/5 .venv/bin/python benchmarks/batch_cost.py

Writes a markdown table to stdout (and JSON with --json FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from typing import Any

from sankofa.api.app import open_services
from sankofa.engine.scorer import ScoreRequest
from sankofa.queues.dispatcher import Job
from sankofa.queues.priority import Priority
from sankofa.settings import Settings

SIZES = (1, 4, 16, 64, 256, 1000)


async def measure(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    settings = Settings(
        environment="test",
        redis_prefix=f"bc{secrets.token_hex(3)}",
        hmac_key="benchmark-hmac-key-0123456789",
    )
    rows = []
    async with open_services(settings) as services:
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
                            "transaction_id": f"bc{run}-{k}",
                            "timestamp": f"2018-04-01T10:{k // 60 % 60:02d}:{k % 60:02d}-03:00",
                            "amount": "48.70",
                            "customer_id": f"c{k % 5000}",
                            "terminal_id": f"t{k % 9000}",
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
            for jobs in batches:
                await services.engine.handle(jobs)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            rows.append(
                {
                    "batch_size": n,
                    "batches": reps,
                    "wall_ms_per_batch": round(wall / reps * 1000, 3),
                    "cpu_ms_per_batch": round(cpu / reps * 1000, 3),
                    "cpu_us_per_transaction": round(cpu / reps / n * 1e6, 1),
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    if not os.environ.get("SANKOFA_DATABASE_URL") or not os.environ.get("SANKOFA_REDIS_URL"):
        raise SystemExit("set SANKOFA_DATABASE_URL and SANKOFA_REDIS_URL (scratch ones)")
    rows = asyncio.run(measure(SIZES))
    print("| batch size | wall ms / batch | service CPU ms / batch | CPU us / transaction |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['wall_ms_per_batch']} | {r['cpu_ms_per_batch']}"
            f" | {r['cpu_us_per_transaction']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
