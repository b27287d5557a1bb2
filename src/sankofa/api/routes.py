"""The HTTP surface: scoring, labels, reads and health."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from sankofa.api import schemas
from sankofa.api.body import read_json
from sankofa.api.headers import priority_of, scan_headers, timeout_of
from sankofa.api.services import Services
from sankofa.auth.rbac import public, requires
from sankofa.auth.roles import ANALYST, SCORER
from sankofa.auth.service import ACTOR_SCOPE_KEY
from sankofa.cache import Loader
from sankofa.engine import constants as C
from sankofa.engine.labels import parse_labels
from sankofa.engine.scorer import DB_DOWN, ScoreRequest
from sankofa.errors import (
    BodyTooLargeError,
    FeatureStoreUnavailableError,
    FieldIssue,
    InvalidFieldError,
    NotFoundError,
    StorageUnavailableError,
)
from sankofa.metrics import PRIORITY_SCOPE_KEY
from sankofa.privacy.cards import looks_like_pan
from sankofa.store import audit
from sankofa.store import repository as repo
from sankofa.store.reads import ReadPools

_TXID: Final = re.compile(C.TRANSACTION_ID_PATTERN)

router = APIRouter()


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def actor_of(request: Request) -> str | None:
    """Who is calling, as authentication left it (auth.rbac), for the audit trail.
    None (auth off): the record names the database session's user."""
    actor = request.scope.get(ACTOR_SCOPE_KEY)
    return actor if isinstance(actor, str) else None


@router.post(
    "/v1/transactions",
    summary="Score one transaction",
    response_model=schemas.DecisionOut,
    responses=schemas.SCORING_RESPONSES,
    openapi_extra=schemas.body_ref("TransactionIn", headers=True),
    tags=["scoring"],
)
@requires(SCORER)
async def score_one(request: Request) -> Response:
    s = _services(request)
    headers = scan_headers(request.scope)
    priority = priority_of(headers)
    request.scope[PRIORITY_SCOPE_KEY] = priority.label
    timeout_s = timeout_of(headers)
    body = await read_json(request, headers, s.settings.max_body_bytes, s.body_deadlines)
    tx = s.parser.parse(body)
    decisions = await s.dispatcher.submit(
        ScoreRequest([tx]), priority=priority, size=1, timeout_s=timeout_s
    )
    return _json(decisions[0])


@router.post(
    "/v1/transactions/batch",
    summary="Score up to 1000 transactions; results in the same order",
    response_model=schemas.BatchDecisionOut,
    responses=schemas.SCORING_RESPONSES,
    openapi_extra=schemas.body_ref("TransactionBatchIn", headers=True),
    tags=["scoring"],
)
@requires(SCORER)
async def score_batch(request: Request) -> Response:
    s = _services(request)
    headers = scan_headers(request.scope)
    priority = priority_of(headers)
    request.scope[PRIORITY_SCOPE_KEY] = priority.label
    timeout_s = timeout_of(headers)
    body = await read_json(request, headers, s.settings.max_body_bytes, s.body_deadlines)
    if not isinstance(body, dict) or not isinstance(body.get("transactions"), list):
        raise InvalidFieldError([FieldIssue("transactions", "must be a list of transactions")])
    extra = body.keys() - {"transactions"}
    if extra:
        raise InvalidFieldError([FieldIssue(k, "unknown field") for k in sorted(extra)])
    items = body["transactions"]
    if not items:
        raise InvalidFieldError([FieldIssue("transactions", "must hold at least one transaction")])
    limit = s.settings.max_batch_items
    if len(items) > limit:
        raise BodyTooLargeError(f"at most {limit} transactions per batch, got {len(items)}")
    txs = s.parser.parse_many(items, prefix="transactions")
    decisions = await s.dispatcher.submit(
        ScoreRequest(txs), priority=priority, size=len(txs), timeout_s=timeout_s
    )
    return _json({"count": len(decisions), "results": decisions})


@router.post(
    "/v1/labels",
    summary="Record labels (fraud or not) learnt after the fact",
    response_model=schemas.LabelsOut,
    responses=schemas.LABELS_RESPONSES,
    openapi_extra=schemas.body_ref("LabelsIn"),
    tags=["labels"],
)
@requires(SCORER, ANALYST)
async def post_labels(request: Request) -> Response:
    s = _services(request)
    body = await read_json(
        request, scan_headers(request.scope), s.settings.max_body_bytes, s.body_deadlines
    )
    labels = parse_labels(
        body, max_items=s.settings.max_batch_items, max_clock_skew_s=s.settings.max_clock_skew_s
    )
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            async with s.pool.acquire() as conn, conn.transaction():
                applied, unknown = await repo.store_labels(conn, labels)
                if unknown:
                    raise InvalidFieldError(
                        [
                            FieldIssue(f"labels[{i}].transaction_id", "no such transaction")
                            for i in unknown
                        ]
                    )
                # Last in the transaction: it holds the audit head's lock until the commit.
                await audit.record(
                    conn,
                    "labels",
                    actor_of(request),
                    {
                        "count": len(labels),
                        "applied": len(applied),
                        "transaction_ids": [lb.transaction_id for lb in labels],
                        "fraud": [lb.transaction_id for lb in labels if lb.fraud],
                    },
                )
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    # Committed: every instance drops the old view (a Redis failure is retried by
    # the cache, never an error here).
    await s.cache.invalidate(TRANSACTIONS_CACHE, [lb.transaction_id for lb in labels])
    # Stored durably; now visible to terminal-risk features. If Redis cannot take
    # them, the labels are not lost: the guard rebuilds the histories from
    # PostgreSQL, labels included, once Redis answers.
    try:
        if not s.guard.available:
            raise FeatureStoreUnavailableError("Redis unavailable")
        await s.features.apply_labels(applied)
    except FeatureStoreUnavailableError:
        s.guard.redis_failed()
        s.guard.scored_without_redis()
    return _json({"received": len(labels), "applied": len(applied)})


@router.get(
    "/v1/transactions/{transaction_id}",
    summary="The stored transaction and its decision",
    responses=schemas.READ_RESPONSES,
    tags=["reads"],
)
@requires(ANALYST)
async def get_transaction(request: Request, transaction_id: str) -> Response:
    s = _services(request)
    if not _TXID.fullmatch(transaction_id):
        raise InvalidFieldError(
            [FieldIssue("transaction_id", "must be 1-64 characters of A-Z a-z 0-9 . _ : -")]
        )
    if looks_like_pan(transaction_id):
        # Never stored, so never found; refused rather than quoted back in a 404.
        raise InvalidFieldError(
            [FieldIssue("transaction_id", "looks like a card number (PAN); never stored")]
        )
    try:
        # Through the layered cache (L1, Redis, then the loader below); a Redis
        # failure is only a miss there, a database failure reaches us.
        view: bytes | None = await s.cache.get(TRANSACTIONS_CACHE, transaction_id)
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    if view is None:
        raise NotFoundError(f"no transaction {transaction_id}")
    return Response(content=view, media_type="application/json")


#: The cache namespace of GET /v1/transactions/{id}: the rendered view, by id.
TRANSACTIONS_CACHE: Final = "transactions"


def transaction_view_loader(reads: ReadPools) -> Loader[bytes]:
    """The cache's L3 for stored transactions: their rendered views, read from the
    replica when configured, and from the primary for ids the replica lacks (it
    may lag) or when it fails, so a transaction just answered 200 is never a 404."""

    async def load_many(ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, dict[str, Any]] = {}

        async def query(conn: Any) -> dict[str, dict[str, Any]] | None:
            found.update(await repo.get_transactions(conn, [i for i in ids if i not in found]))
            return found if len(found) == len(ids) else None

        await reads.fetch(query)
        return {
            tid: orjson.dumps(_transaction_view(row), option=orjson.OPT_SERIALIZE_NUMPY)
            for tid, row in found.items()
        }

    return load_many


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _transaction_view(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import timedelta, timezone

    local = row["event_time"].astimezone(timezone(timedelta(seconds=row["utc_offset_s"])))
    return {
        "transaction": {
            "transaction_id": row["transaction_id"],
            "timestamp": local.isoformat(),
            "amount": str(row["amount"]),
            "currency": row["currency"].strip(),
            "customer_ref": row["customer_ref"],
            "terminal_id": row["terminal_id"],
            "type": row["tx_type"],
            "channel": row["channel"],
            "device_ref": row["device_ref"],
            "ip_ref": row["ip_ref"],
            "metadata": row["metadata"],
            "card_token": row.get("card_token"),
            "card_last4": row.get("card_last4"),
            "received_at": row["received_at"].isoformat(),
            "personal_data_erased_at": _iso(row.get("personal_data_erased_at")),
        },
        "decision": {
            "decision": row["decision"],
            "risk_score": row["risk_score"],
            "risk_level": row["risk_level"],
            "reasons": list(row["reasons"]),
            "model_version": row["model_version"],
            # null: unknown when decided (a history Redis could not give, flagged
            # FEATURES_DEGRADED); JSON has no NaN, and a made-up number would lie.
            "features": [v if math.isfinite(v) else None for v in row["features"]],
            "priority": row["priority"],
            "queue_ms": row["queue_ms"],
            "processing_ms": row["processing_ms"],
            "batch_size": row["batch_size"],
            # The rules that matched, as id@version (sankofa.rules): active ones, the
            # deciding one first when a rule decided, and shadow ones, never acted on.
            "rule_hits": list(row.get("rule_hits") or ()),
            "shadow_rule_hits": list(row.get("shadow_rule_hits") or ()),
            "decided_at": row["received_at"].isoformat(),
        },
        "label": None
        if row["label_fraud"] is None
        else {"fraud": row["label_fraud"], "labelled_at": row["labelled_at"].isoformat()},
    }


#: Longest wait for the replica's answer to a readiness probe.
_REPLICA_PROBE_S: Final = 0.5
_TEXT_PLAIN: Final = {"text/plain": {"schema": {"type": "string"}}}
_READY_SCHEMA: Final = {
    "type": "object",
    "required": ["status", "checks", "replica"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "ready-degraded", "not-ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "replica": {
            "type": "string",
            "enum": ["ok", "unavailable", "not_configured"],
            "description": "The read replica, reported only: the primary answers every"
            " read when it is unavailable, so readiness never depends on it",
        },
    },
}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["health"],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition format", "content": _TEXT_PLAIN},
        **schemas.problem_responses(431),
    },
)
@public()
async def metrics(request: Request) -> Response:
    body, content_type = _services(request).metrics.render()
    return Response(content=body, media_type=content_type)


@router.get(
    "/health/live",
    summary="The process is up",
    tags=["health"],
    response_class=Response,
    responses={
        200: {
            "description": "Alive",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "ok"}},
                    }
                }
            },
        },
        **schemas.problem_responses(431),
    },
)
@router.head("/health/live", include_in_schema=False)
@public()
async def live() -> Response:
    return _json({"status": "ok"})


@router.get(
    "/health/ready",
    summary="Ready to score: database, Redis, dispatcher (and the read replica, reported)",
    tags=["health"],
    response_class=Response,
    responses={
        200: {"description": "Ready", "content": {"application/json": {"schema": _READY_SCHEMA}}},
        503: {
            "description": "Not ready (a check failed, or draining); Retry-After says when to ask again",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": _READY_SCHEMA}},
        },
        **schemas.problem_responses(431),
    },
)
@router.head("/health/ready", include_in_schema=False)
@public()
async def ready(request: Request) -> Response:
    s = _services(request)
    checks: dict[str, bool] = {}
    async with asyncio.TaskGroup() as probes:
        # The replica is reported, never required: reads fall back to the primary,
        # which the checks below cover. Probed meanwhile, so that a black-holed
        # replica adds nothing to the probe's time (the orchestrator's timeout).
        replica = probes.create_task(
            s.reads.replica_state(min(_REPLICA_PROBE_S, s.settings.db_replica_timeout_s))
        )
        try:
            async with asyncio.timeout(1.0):
                async with s.pool.acquire() as conn:
                    checks["database"] = await conn.fetchval("SELECT 1") == 1
        except DB_DOWN:
            checks["database"] = False
        checks["dispatcher"] = s.dispatcher.running
        checks["accepting"] = not s.dispatcher.draining
        ok = all(checks.values())
        # Redis is reported, not required: without it the service still scores, on
        # degraded features (the classes configured to fail closed get 503s). Taking
        # every instance out of the load balancer because Redis is down would refuse
        # every class instead.
        try:
            checks["redis"] = await s.features.ping()
        except FeatureStoreUnavailableError:
            checks["redis"] = False
        checks["features_complete"] = s.guard.complete and s.guard.available
    body = {
        "status": ("ready" if not s.guard.degraded else "ready-degraded") if ok else "not-ready",
        "checks": checks,
        "replica": replica.result(),
    }
    if ok:
        return _json(body)
    return Response(
        content=orjson.dumps(body),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": "1"},
    )
