"""OAuth 2.0 token endpoint (client credentials, RFC 6749 4.4) and client admin.

``POST /v1/oauth/token`` takes ``grant_type=client_credentials`` as a form
(``application/x-www-form-urlencoded``, as the RFC says) or as JSON, with the
client's credentials in HTTP Basic (RFC 6749 2.3.1) or in the body
(``client_id``, ``client_secret``), and an optional ``scope``: space-separated
roles, a subset of the client's. It answers ``access_token``, ``token_type``
(Bearer), ``expires_in`` and ``scope``, never cached. Refusals are problem+json
carrying RFC 6749's ``error`` code too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from sankofa.api.body import parse_json
from sankofa.api.services import Services
from sankofa.auth import clients as client_store
from sankofa.auth.audit_hook import audit
from sankofa.auth.kdf import dummy_hash, verify_secret
from sankofa.auth.rbac import public, requires
from sankofa.auth.roles import ADMIN, ROLES
from sankofa.engine.scorer import DB_DOWN
from sankofa.errors import (
    FieldIssue,
    InvalidFieldError,
    NotFoundError,
    RateLimitedError,
    StorageUnavailableError,
    TokenRequestError,
    UnsupportedMediaTypeError,
)

router = APIRouter()

#: A token request is a few short fields.
MAX_TOKEN_BODY_BYTES: Final = 4096
_FIELDS: Final = frozenset({"grant_type", "client_id", "client_secret", "scope"})
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_TOKEN_REQUEST_SCHEMA: Final = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"},
        "scope": {
            "type": "string",
            "description": "space-separated roles (default: all the client's)",
        },
    },
}
_TOKEN_SCHEMA: Final = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
    },
}
_PROBLEM: Final = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problem(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": _PROBLEM}


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _headers(request: Request) -> dict[str, str]:
    wanted = (b"content-type", b"content-length", b"authorization")
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in request.scope["headers"]
        if name in wanted
    }


def _invalid(detail: str) -> TokenRequestError:
    return TokenRequestError(detail, error="invalid_request")


def _form(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    pairs: list[tuple[str, Any]]
    if media == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=len(_FIELDS))
        except (UnicodeDecodeError, ValueError):
            raise _invalid("the form is not valid application/x-www-form-urlencoded") from None
    elif media == "application/json":
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise _invalid("the JSON body must be an object")
        pairs = list(doc.items())
    else:
        raise UnsupportedMediaTypeError(
            "Content-Type must be application/x-www-form-urlencoded or application/json"
        )
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in _FIELDS:
            continue  # RFC 6749 3.2: unknown parameters are ignored
        if key in out:
            raise _invalid(f"{key} appears more than once")
        if not isinstance(value, str):
            raise _invalid(f"{key} must be a string")
        out[key] = value
    return out


def _basic(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenRequestError(
            "the Basic credentials are not base64", error="invalid_client", status=401
        ) from None
    cid, sep, secret = raw.partition(":")
    if not sep:
        raise TokenRequestError(
            "the Basic credentials need client_id:client_secret", error="invalid_client", status=401
        )
    # RFC 6749 2.3.1: both are form-urlencoded before being joined.
    return unquote_plus(cid), unquote_plus(secret)


@router.post(
    "/v1/oauth/token",
    summary="OAuth 2.0 client credentials: an access token for a registered client",
    tags=["auth"],
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": _TOKEN_REQUEST_SCHEMA},
                "application/json": {"schema": _TOKEN_REQUEST_SCHEMA},
            },
        }
    },
    responses={
        200: {
            "description": "The token",
            "content": {"application/json": {"schema": _TOKEN_SCHEMA}},
        },
        400: _problem("invalid_request, unsupported_grant_type or invalid_scope"),
        401: _problem("invalid_client: unknown client or wrong secret"),
        408: _problem("Body not received in time"),
        413: _problem("Body too large"),
        415: _problem("Wrong media type"),
        429: _problem("Too many token requests for this client (with Retry-After)"),
        431: _problem("Request headers too large"),
        503: _problem("Storage unavailable (with Retry-After)"),
    },
)
@public()
async def issue_token(request: Request) -> Response:
    s = _services(request)
    headers = _headers(request)
    body = await s.body_deadlines.read(request, headers, MAX_TOKEN_BODY_BYTES)
    form = _form(body, headers)
    grant = form.get("grant_type")
    if grant is None:
        raise _invalid("grant_type is required")
    if grant != "client_credentials":
        raise TokenRequestError(
            "only grant_type client_credentials is supported", error="unsupported_grant_type"
        )
    basic = _basic(headers.get("authorization", ""))
    in_body = "client_id" in form or "client_secret" in form
    if basic is not None and in_body:
        raise _invalid("send the client credentials once: HTTP Basic or the body, not both")
    cid, secret = basic if basic is not None else (form.get("client_id"), form.get("client_secret"))
    if not cid or secret is None:
        raise TokenRequestError(
            "client_id and client_secret are required", error="invalid_client", status=401
        )
    if not client_store.ID_PATTERN.fullmatch(cid):
        # Not even the shape of an id (which is public): no scrypt spent on it.
        await audit(None, "token.refused", cid[:64], {"reason": "malformed client id"})
        raise TokenRequestError(
            "unknown client or wrong secret", error="invalid_client", status=401
        )
    # Before the scrypt check, per client id and in all: guessing secrets, or
    # making the service hash, costs the caller, not the service's CPU.
    wait_s = max(
        s.auth.token_limits.take(cid),
        s.auth.token_limits.take("*", s.settings.token_requests_per_s_total),
    )
    if wait_s:
        raise RateLimitedError("too many token requests", retry_after_s=wait_s)
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            found = await client_store.client_with_hash(s.pool, cid)
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    # An unknown id costs the same check as a wrong secret: no oracle for which ids exist.
    stored = found[1] if found is not None else dummy_hash()
    ok = await asyncio.to_thread(verify_secret, secret, stored)
    if found is None or not ok:
        await audit(None, "token.refused", cid[:64], {"reason": "unknown client or wrong secret"})
        raise TokenRequestError(
            "unknown client or wrong secret", error="invalid_client", status=401
        )
    client = found[0]
    s.auth.clients.learn(client)
    roles = client.roles
    if "scope" in form:
        asked = frozenset(form["scope"].split())
        if not asked or not asked <= client.roles:
            raise TokenRequestError(
                f"scope must name roles of this client: {' '.join(sorted(client.roles))}",
                error="invalid_scope",
            )
        roles = asked
    token, ttl = s.auth.issuer.issue(
        subject=client.client_id, roles=roles, client_id=client.client_id
    )
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            await audit(
                s.pool, "token.issue", client.client_id, {"roles": sorted(roles), "ttl_s": ttl}
            )
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    return Response(
        content=orjson.dumps(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl,
                "scope": " ".join(sorted(roles)),
            }
        ),
        media_type="application/json",
        headers=_NO_STORE,
    )


_CLIENTS_SCHEMA: Final = {
    "type": "object",
    "required": ["clients"],
    "properties": {
        "clients": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["client_id", "name", "roles", "rate_per_s", "created_at"],
                "properties": {
                    "client_id": {"type": "string"},
                    "name": {"type": "string"},
                    "roles": {"type": "array", "items": {"enum": sorted(ROLES)}},
                    "rate_per_s": {"type": ["number", "null"]},
                    "created_at": {"type": "string"},
                },
            },
        }
    },
}
_ADMIN_PROBLEMS: Final[dict[int | str, dict[str, Any]]] = {
    401: _problem("No valid bearer token"),
    403: _problem("The token lacks the admin role"),
    429: _problem("Over the client's rate (with Retry-After)"),
    431: _problem("Authorization header too large"),
    503: _problem("Storage unavailable (with Retry-After)"),
}


@router.get(
    "/v1/clients",
    summary="The registered clients (never their secrets)",
    tags=["auth"],
    response_class=Response,
    responses={
        200: {
            "description": "Clients",
            "content": {"application/json": {"schema": _CLIENTS_SCHEMA}},
        },
        **_ADMIN_PROBLEMS,
    },
)
@requires(ADMIN)
async def get_clients(request: Request) -> Response:
    s = _services(request)
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            found = await client_store.list_clients(s.pool)
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    return Response(
        content=orjson.dumps({"clients": [c.public() for c in found]}),
        media_type="application/json",
    )


@router.delete(
    "/v1/clients/{client_id}",
    summary="Delete a client: its tokens stop working",
    tags=["auth"],
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Deleted"},
        404: _problem("No such client"),
        422: _problem("Not a client id"),
        **_ADMIN_PROBLEMS,
    },
)
@requires(ADMIN)
async def remove_client(request: Request, client_id: str) -> Response:
    s = _services(request)
    if not client_store.ID_PATTERN.fullmatch(client_id):
        raise InvalidFieldError([FieldIssue("client_id", "must be cl_ and 16 hex digits")])
    principal = request.scope.get("sankofa.principal")
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            async with s.pool.acquire() as conn, conn.transaction():
                gone = await client_store.delete_client(conn, client_id)
                if gone is not None:
                    await audit(
                        conn,
                        "client.delete",
                        getattr(principal, "subject", None),
                        {"client_id": client_id, "name": gone.name, "roles": sorted(gone.roles)},
                    )
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    if gone is None:
        raise NotFoundError(f"no client {client_id}")
    s.auth.client_deleted(client_id)
    return Response(status_code=204)
