"""Baselines for load tests, mounted only with ``SANKOFA_BENCHMARK_ENDPOINTS=true``.

* ``POST /bench/bare``: reads and parses the request exactly like
  ``POST /v1/transactions`` and answers a fixed decision. The ceiling: what
  HTTP, the framework and JSON cost on this machine with these settings.
* ``POST /bench/naive``: the whole job without the dispatcher: validate, one
  Redis call for this one transaction, score one row, one INSERT transaction,
  answer (plain INSERTs). What a straightforward implementation would do per request.

Both share the scoring path's code wherever they can, so that the comparison
measures batching and nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import asyncpg
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from sankofa.api.body import read_json
from sankofa.api.headers import priority_of, scan_headers
from sankofa.api.services import Services
from sankofa.auth.rbac import requires
from sankofa.auth.roles import SCORER
from sankofa.engine.decision import decide
from sankofa.engine.scorer import DB_DOWN
from sankofa.errors import ConflictError, StorageUnavailableError
from sankofa.store import repository as repo

router = APIRouter(
    prefix="/bench",
    tags=["benchmark baselines"],
    include_in_schema=False,
)

_FIXED: Final = orjson.dumps(
    {
        "transaction_id": "bare",
        "decision": "approve",
        "risk_score": 0.001,
        "risk_level": "LOW",
        "reasons": ["NO_STRONG_RISK_FACTOR"],
        "model_version": "bare",
        "priority": "normal",
        "replayed": False,
        "queue_ms": 0.0,
        "processing_ms": 0.0,
        "batch_size": 1,
    }
)


@router.post("/bare")
@requires(SCORER)
async def bare(request: Request) -> Response:
    s: Services = request.state.services
    headers = scan_headers(request.scope)
    priority_of(headers)
    body: Any = await read_json(request, headers, s.settings.max_body_bytes, s.body_deadlines)
    if not isinstance(body, dict):
        body = {}
    return Response(content=_FIXED, media_type="application/json")


@router.post("/naive")
@requires(SCORER)
async def naive(request: Request) -> Response:
    s: Services = request.state.services
    loop = asyncio.get_running_loop()
    started = loop.time()
    headers = scan_headers(request.scope)
    priority = priority_of(headers)
    tx = s.parser.parse(
        await read_json(request, headers, s.settings.max_body_bytes, s.body_deadlines)
    )
    online = await s.features.compute([tx])
    model = s.engine.model
    scores, contributions, fallback = model.predict(online.matrix)
    d = decide(s.engine.policy, scores, contributions, model.contribution_names, fallback)
    version = f"{model.name}@{model.version}"
    score = float(scores[0])
    processing_ms = round((loop.time() - started) * 1000.0, 3)
    row = repo.record(
        tx,
        decision=d.decision[0],
        risk_score=score,
        risk_level=d.risk_level[0],
        reasons=d.reasons[0],
        model_version=version,
        features=repo.encode_features(online.matrix)[0],
        priority=priority.label,
        queue_ms=0.0,
        processing_ms=processing_ms,
        batch_size=1,
    )
    out = {
        "transaction_id": tx.transaction_id,
        "decision": d.decision[0],
        "risk_score": score,
        "risk_level": d.risk_level[0],
        "reasons": d.reasons[0],
        "model_version": version,
        "priority": priority.label,
        "replayed": False,
        "queue_ms": 0.0,
        "processing_ms": processing_ms,
        "batch_size": 1,
    }
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            async with s.pool.acquire() as conn, conn.transaction():
                await repo.insert_one(conn, row)
    except asyncpg.UniqueViolationError:
        raise ConflictError(
            "transaction_id already stored (the naive path does not replay)"
        ) from None
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    return Response(content=orjson.dumps(out), media_type="application/json")
