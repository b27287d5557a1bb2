"""``sankofa privacy retention``: enforce the personal data retention limit.

Run it daily (cron, a Kubernetes CronJob): safe beside live traffic, safe to
run twice. Exit 0 on success, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg
import orjson


def add_privacy_parser(sub: Any) -> None:
    s = sub.add_parser(
        "privacy",
        help="personal data (LGPD)",
        description="Personal data tools (SANKOFA_DATABASE_URL).",
    )
    psub = s.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")
    r = psub.add_parser(
        "retention",
        help="strip personal data older than SANKOFA_PERSONAL_DATA_RETENTION_DAYS",
        description="Remove the personal data (customer, device, IP and card refs, metadata) of"
        " every transaction received longer ago than the retention limit; the decisions stay."
        " Each window changed leaves a `retention` record in the audit trail.",
    )
    r.add_argument(
        "--days",
        type=int,
        help="retention in days (default SANKOFA_PERSONAL_DATA_RETENTION_DAYS)",
    )
    r.add_argument("--dry-run", action="store_true", help="count, change nothing")


def run_privacy(args: argparse.Namespace) -> int:
    from sankofa.privacy.erasure import enforce_retention
    from sankofa.settings import Settings

    settings = Settings()
    url = settings.database_url
    if not url:
        print("sankofa privacy: set SANKOFA_DATABASE_URL", file=sys.stderr)
        return 2
    days = args.days if args.days is not None else settings.personal_data_retention_days
    if days < 1:
        print("sankofa privacy retention: --days must be >= 1", file=sys.stderr)
        return 2

    async def run() -> dict[str, object]:
        conn = await asyncpg.connect(url)
        try:
            rep = await enforce_retention(
                conn, days=days, actor="sankofa privacy retention", dry_run=args.dry_run
            )
        finally:
            await conn.close()
        return rep.as_dict()

    try:
        out = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"sankofa privacy retention: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    out["dry_run"] = bool(args.dry_run)
    print(orjson.dumps(out).decode())
    return 0
