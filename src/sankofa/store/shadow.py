"""``sankofa shadow report``: how a shadow (challenger) model would have decided.

The scoring engine stores the shadow model's score, decision and version in
the same row as the champion's (migration 0002). This report reads them back:

* the agreement matrix of the two decisions (champion rows, shadow columns),
  and how many decisions would change, by kind;
* where labels exist (``POST /v1/labels``): AUC ROC and Average Precision of
  both scores, and the frauds each policy would have sent to review or
  declined, so a challenger is promoted on evidence, not on its own metrics.

The matrix is counted by PostgreSQL; scores of labelled rows are read in
chunks into numpy for the ranking metrics. With ``SANKOFA_DATABASE_REPLICA_URL``
set, the report reads the replica (the primary if the replica does not
answer), so it may miss the last moments of writes: its replication lag.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from sankofa.engine.constants import DECISIONS
from sankofa.evaluation.metrics import average_precision, roc_auc
from sankofa.store.reads import connect_for_reads

_FETCH_ROWS: Final = 50_000
_CONNECT_TIMEOUT_S: Final = 10.0
_FLAGGED: Final = ("review", "decline")


async def shadow_report(
    database_url: str, *, since: date | None = None, replica_url: str | None = None
) -> dict[str, Any]:
    """The report as a dict (see the module docstring). Read from the replica when
    one is given and answers (store/reads.py), else from the primary: a scan of
    the decisions has no business on the primary, which is scoring meanwhile."""
    start = (
        datetime(since.year, since.month, since.day, tzinfo=UTC)
        if since
        else datetime(1970, 1, 1, tzinfo=UTC)
    )
    conn = await connect_for_reads(database_url, replica_url, timeout_s=_CONNECT_TIMEOUT_S)
    try:
        pairs = await conn.fetch(
            """
            SELECT model_version, shadow_model_version, decision, shadow_decision, count(*) AS n
            FROM transactions
            WHERE shadow_decision IS NOT NULL AND event_time >= $1
            GROUP BY 1, 2, 3, 4
            """,
            start,
        )
        champion: list[float] = []
        shadow: list[float] = []
        fraud: list[bool] = []
        flagged_c: list[bool] = []
        flagged_s: list[bool] = []
        async with conn.transaction():
            cursor = await conn.cursor(
                """
                SELECT t.risk_score, t.shadow_risk_score, t.decision, t.shadow_decision, l.fraud
                FROM transactions t JOIN labels l USING (transaction_id)
                WHERE t.shadow_decision IS NOT NULL AND t.event_time >= $1
                """,
                start,
            )
            while rows := await cursor.fetch(_FETCH_ROWS):
                for r in rows:
                    champion.append(r["risk_score"])
                    shadow.append(r["shadow_risk_score"])
                    fraud.append(r["fraud"])
                    flagged_c.append(r["decision"] in _FLAGGED)
                    flagged_s.append(r["shadow_decision"] in _FLAGGED)
    finally:
        await conn.close()
    return _assemble(pairs, champion, shadow, fraud, flagged_c, flagged_s, since)


def _assemble(
    pairs: list[Any],
    champion: list[float],
    shadow: list[float],
    fraud: list[bool],
    flagged_c: list[bool],
    flagged_s: list[bool],
    since: date | None,
) -> dict[str, Any]:
    matrix = {c: dict.fromkeys(DECISIONS, 0) for c in DECISIONS}
    versions: dict[str, int] = {}
    for r in pairs:
        matrix[r["decision"]][r["shadow_decision"]] += int(r["n"])
        key = f"{r['model_version']} vs {r['shadow_model_version']}"
        versions[key] = versions.get(key, 0) + int(r["n"])
    total = sum(sum(row.values()) for row in matrix.values())
    changes = {
        f"{c}->{s}": matrix[c][s] for c in DECISIONS for s in DECISIONS if c != s and matrix[c][s]
    }
    report: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "transactions": total,
        "versions": versions,
        "agreement_matrix": matrix,
        "agreeing": sum(matrix[d][d] for d in DECISIONS),
        "would_change": sum(changes.values()),
        "changes": changes,
    }
    y = np.asarray(fraud, dtype=bool)
    labelled: dict[str, Any] = {"transactions": int(y.size), "frauds": int(y.sum())}
    if y.any() and not y.all():
        c, s = np.asarray(champion), np.asarray(shadow)
        fc, fs = np.asarray(flagged_c), np.asarray(flagged_s)
        for name, scores, flagged in (("champion", c, fc), ("shadow", s, fs)):
            labelled[name] = {
                "auc_roc": roc_auc(y, scores),
                "average_precision": average_precision(y, scores),
                "flagged": int(flagged.sum()),
                "frauds_flagged": int((flagged & y).sum()),
            }
    report["labelled"] = labelled
    return report


def print_report(rep: dict[str, Any]) -> None:
    print(f"transactions with a shadow decision: {rep['transactions']:,}")
    for pair, n in rep["versions"].items():
        print(f"  {pair}: {n:,}")
    print("agreement (rows: champion, columns: shadow):")
    print(f"  {'':>8} " + " ".join(f"{d:>10}" for d in DECISIONS))
    for c in DECISIONS:
        row = rep["agreement_matrix"][c]
        print(f"  {c:>8} " + " ".join(f"{row[d]:>10,}" for d in DECISIONS))
    print(f"would change: {rep['would_change']:,} {rep['changes']}")
    lab = rep["labelled"]
    print(f"labelled: {lab['transactions']:,} ({lab['frauds']:,} frauds)")
    for name in ("champion", "shadow"):
        if name in lab:
            m = lab[name]
            print(
                f"  {name:<8} AUC ROC {m['auc_roc']:.4f}  AP {m['average_precision']:.4f}"
                f"  flagged {m['flagged']:,} of which frauds {m['frauds_flagged']:,}"
            )


def run_shadow_report(args: argparse.Namespace) -> int:
    from sankofa.settings import Settings

    settings = Settings()
    url = settings.database_url
    if not url:
        print("sankofa shadow report: set SANKOFA_DATABASE_URL", file=sys.stderr)
        return 2
    rep = asyncio.run(
        shadow_report(url, since=args.since, replica_url=settings.database_replica_url)
    )
    print_report(rep)
    if args.report:
        Path(args.report).write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    return 0
