"""``POST /v1/privacy/erasure``: a data subject's personal data removed (LGPD art. 18)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from sankofa.api import schemas
from sankofa.api.body import read_json
from sankofa.api.headers import scan_headers
from sankofa.api.routes import TRANSACTIONS_CACHE, actor_of
from sankofa.api.services import Services
from sankofa.auth.rbac import requires
from sankofa.auth.roles import ADMIN
from sankofa.engine import constants as C
from sankofa.engine.scorer import DB_DOWN
from sankofa.errors import FieldIssue, InvalidFieldError, StorageUnavailableError
from sankofa.privacy import documents
from sankofa.privacy.cards import looks_like_pan
from sankofa.privacy.erasure import erase_customer

router = APIRouter()

_FIELDS: Final = frozenset({"customer_id", "customer_id_type", "request_ref"})
_REF: Final = re.compile(r"^[A-Za-z0-9._:/-]{1,64}$")

ERASURE_SCHEMA: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["customer_id"],
    "properties": {
        "customer_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": C.MAX_IDENTIFIER_CHARS,
            "description": "the identifier the transactions were sent with",
        },
        "customer_id_type": {
            "type": "string",
            "enum": list(documents.KINDS),
            "description": "as it was declared on the transactions (normalised the same way)",
        },
        "request_ref": {
            "type": "string",
            "pattern": _REF.pattern,
            "description": "the controller's reference of the request (a ticket id), audited;"
            " must hold no personal data",
        },
    },
}


def _parse(body: Any) -> tuple[str, str | None, str | None]:
    if not isinstance(body, dict):
        raise InvalidFieldError([FieldIssue("body", "must be a JSON object")])
    issues = [FieldIssue(str(k), "unknown field") for k in sorted(body.keys() - _FIELDS)]
    customer = body.get("customer_id")
    kind = body.get("customer_id_type")
    ref = body.get("request_ref")
    if not (
        isinstance(customer, str)
        and 1 <= len(customer) <= C.MAX_IDENTIFIER_CHARS
        and customer.isprintable()
    ):
        issues.append(
            FieldIssue(
                "customer_id", f"is required: 1-{C.MAX_IDENTIFIER_CHARS} printable characters"
            )
        )
    if kind is not None and kind not in documents.KINDS:
        issues.append(
            FieldIssue("customer_id_type", f"must be one of {', '.join(documents.KINDS)}")
        )
    if ref is not None and not (isinstance(ref, str) and _REF.fullmatch(ref)):
        issues.append(FieldIssue("request_ref", "must be 1-64 characters of A-Z a-z 0-9 . _ : / -"))
    elif isinstance(ref, str) and looks_like_pan(ref):
        # It goes into the audit trail, which can never be edited.
        issues.append(FieldIssue("request_ref", "looks like a card number (PAN); not accepted"))
    if issues:
        raise InvalidFieldError(issues)
    assert isinstance(customer, str)
    return customer, kind, ref


@router.post(
    "/v1/privacy/erasure",
    dependencies=[requires(ADMIN)],
    summary="Erase a customer's personal data; the decision records are kept (LGPD)",
    responses=schemas.problem_responses(400, 408, 413, 415, 422, 431, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ERASURE_SCHEMA}},
        }
    },
    tags=["privacy"],
)
async def erasure(request: Request) -> Response:
    s: Services = request.state.services
    body = await read_json(
        request, scan_headers(request.scope), s.settings.max_body_bytes, s.body_deadlines
    )
    customer, kind, request_ref = _parse(body)
    customer_ref = s.parser.customer_ref(customer, kind)
    if customer_ref is None:
        assert kind is not None
        raise InvalidFieldError(
            [FieldIssue("customer_id", f"is not a valid {kind.upper()} (format or check digits)")]
        )
    normal = documents.normalise(kind, customer) if kind else customer
    assert normal is not None
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            async with s.pool.acquire() as conn:
                done = await erase_customer(
                    conn,
                    customer_ref=customer_ref,
                    subject_proof=s.parser.pseudonymise("erasure", normal),
                    actor=actor_of(request),
                    request_ref=request_ref,
                )
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    # Cached views of those transactions (GET /v1/transactions/{id}) hold what was
    # just erased: every instance drops them (a cache failure keeps it pending
    # and retried; the cache never raises).
    await s.cache.invalidate(TRANSACTIONS_CACHE, list(done.transaction_ids))
    # The online history (amounts and times under the ref) goes too; it would
    # expire on its own after SANKOFA_FEATURE_KEY_TTL_S otherwise.
    try:
        async with asyncio.timeout(s.settings.redis_timeout_s):
            await s.redis.delete(s.features.customer_key(customer_ref))
        history_deleted = True
    except (RedisError, OSError, TimeoutError):
        history_deleted = False
    out = {
        "erasure_id": done.erasure_id,
        "transactions_erased": done.transactions,
        "feature_history_deleted": history_deleted,
        "audit_seq": done.audit_seq,
    }
    return Response(content=orjson.dumps(out), media_type="application/json")
