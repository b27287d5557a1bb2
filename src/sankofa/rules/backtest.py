"""What a draft rule would have hit among the stored transactions of a time range.

The rule is compiled exactly as a stored rule would be and evaluated, in
chunks, on the same columns (``fields.stored_columns``): the stored transaction
and the feature vector stored with its decision, i.e. the features as they
were when it was scored. Each hit is counted by its label (``labels``): fraud
(caught), legitimate (a false positive) or not labelled yet. Range: ``from``
included, ``to`` excluded, by event time; at most ``max_rows`` transactions
are read, and the answer says when it stopped there (``truncated``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import numpy as np

from sankofa.engine.feature_names import N_SERVED_FEATURES
from sankofa.engine.transaction import parse_timestamp
from sankofa.errors import FieldIssue, InvalidFieldError
from sankofa.rules.compile import CompiledExpression
from sankofa.rules.fields import stored_columns
from sankofa.rules.model import compile_checked

#: Rows fetched per round trip (and evaluated per numpy pass).
CHUNK_ROWS: Final = 20_000
#: Hit ids given back as a sample.
SAMPLE_HITS: Final = 20
_FIELDS: Final = {"expression", "from", "to", "max_rows"}

_QUERY: Final = """
SELECT t.transaction_id, t.amount_cents, t.tx_type, t.currency, t.channel, t.terminal_id,
       t.device_ref IS NOT NULL AS has_device, t.ip_ref IS NOT NULL AS has_ip,
       extract(epoch FROM t.event_time)::float8 + t.utc_offset_s AS local_s,
       t.features, l.fraud
FROM transactions t LEFT JOIN labels l USING (transaction_id)
WHERE t.event_time >= $1 AND t.event_time < $2
"""


@dataclass(frozen=True, slots=True)
class BacktestRequest:
    condition: CompiledExpression
    start: datetime
    end: datetime
    max_rows: int


def parse_request(body: object, *, max_rows: int) -> BacktestRequest:
    if not isinstance(body, dict):
        raise InvalidFieldError([FieldIssue("body", "must be a JSON object")])
    issues: list[FieldIssue] = [
        FieldIssue(str(k), "unknown field") for k in sorted(body.keys() - _FIELDS)
    ]
    times: dict[str, datetime] = {}
    for name in ("from", "to"):
        raw = body.get(name)
        if raw is None:
            issues.append(FieldIssue(name, "is required: an RFC 3339 time with an offset"))
            continue
        dt, why = parse_timestamp(raw)
        if why:
            issues.append(FieldIssue(name, why))
        else:
            times[name] = dt
    if len(times) == 2 and not times["from"] < times["to"]:
        issues.append(FieldIssue("to", "must be after from"))
    limit = body.get("max_rows", max_rows)
    if not (isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= max_rows):
        issues.append(FieldIssue("max_rows", f"must be an integer from 1 to {max_rows}"))
    expression = body.get("expression")
    if not isinstance(expression, str):
        issues.append(FieldIssue("expression", "is required: a string"))
    if issues:
        raise InvalidFieldError(issues)
    assert isinstance(expression, str) and isinstance(limit, int)
    return BacktestRequest(compile_checked(expression), times["from"], times["to"], limit)


def _features(blobs: list[bytes]) -> np.ndarray:
    """The stored vectors as a matrix; vectors shorter than today's (stored by an
    older version) are padded with NaN, which no comparison matches."""
    width = N_SERVED_FEATURES * 8
    if all(len(b) == width for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype=">f8").reshape(len(blobs), N_SERVED_FEATURES)
    x = np.full((len(blobs), N_SERVED_FEATURES), np.nan)
    for i, b in enumerate(blobs):
        v = np.frombuffer(b, dtype=">f8")[:N_SERVED_FEATURES]
        x[i, : v.size] = v
    return x


async def run(
    conn: asyncpg.Connection, req: BacktestRequest, *, fetch_timeout_s: float
) -> dict[str, Any]:
    scanned = hits = caught = false_pos = unlabelled_hits = frauds = legit = 0
    sample: list[str] = []
    truncated = False
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(_QUERY, req.start, req.end)
        while True:
            want = min(CHUNK_ROWS, req.max_rows - scanned + 1)
            async with asyncio.timeout(fetch_timeout_s):
                rows = await cursor.fetch(want)
            if not rows:
                break
            if scanned + len(rows) > req.max_rows:
                rows = rows[: req.max_rows - scanned]
                truncated = True
            n = len(rows)
            cols = stored_columns(
                amount_cents=np.fromiter((r["amount_cents"] for r in rows), np.int64, n),
                tx_type=[r["tx_type"] for r in rows],
                currency=[r["currency"] for r in rows],
                channel=[r["channel"] for r in rows],
                terminal_id=[r["terminal_id"] for r in rows],
                has_device=np.fromiter((r["has_device"] for r in rows), np.bool_, n),
                has_ip=np.fromiter((r["has_ip"] for r in rows), np.bool_, n),
                local_time_s=np.fromiter((r["local_s"] for r in rows), np.float64, n),
                x=_features([r["features"] for r in rows]),
            )
            mask = req.condition(cols)
            label = np.fromiter(
                (-1 if r["fraud"] is None else int(r["fraud"]) for r in rows), np.int8, n
            )
            scanned += n
            hits += int(mask.sum())
            caught += int((mask & (label == 1)).sum())
            false_pos += int((mask & (label == 0)).sum())
            unlabelled_hits += int((mask & (label == -1)).sum())
            frauds += int((label == 1).sum())
            legit += int((label == 0).sum())
            if len(sample) < SAMPLE_HITS:
                for i in np.flatnonzero(mask)[: SAMPLE_HITS - len(sample)].tolist():
                    sample.append(rows[i]["transaction_id"])
            if truncated:
                break
    return {
        "expression": req.condition.text,
        "from": req.start.isoformat(),
        "to": req.end.isoformat(),
        "transactions": scanned,
        "truncated": truncated,
        "hits": hits,
        "frauds_caught": caught,
        "false_positives": false_pos,
        "unlabelled_hits": unlabelled_hits,
        "labelled": {"frauds": frauds, "legitimate": legit},
        "frauds_missed": frauds - caught,
        "precision": caught / (caught + false_pos) if caught + false_pos else None,
        "recall": caught / frauds if frauds else None,
        "sample_hits": sample,
    }
