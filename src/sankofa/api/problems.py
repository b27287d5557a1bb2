"""RFC 9457 problem details: every error the API returns has this shape.

``type`` is a stable URN per kind of problem (``urn:sankofa:problem:<slug>``),
``title`` the kind in words, ``detail`` this occurrence, ``status`` the HTTP
status. 422s add ``errors`` (each ``{"field", "message"}``) and, for batches,
``indexes`` of the offending items. 503 and 504 always carry Retry-After.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sankofa.errors import (
    ConflictError,
    DeadlineExceededError,
    DrainingError,
    InvalidFieldError,
    RateLimitedError,
    SankofaError,
    TokenRequestError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedContentEncodingError,
)
from sankofa.privacy.cards import mask_pans

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:sankofa:problem:"
_INDEX: Final = re.compile(r"^[a-z_]+\[([0-9]+)\]")

_HTTP_SLUGS: Final = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        # The request's own path, quoted back: never with a card number in it.
        body["instance"] = mask_pans(instance)
    body.update(extra)
    return Response(
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def from_error(exc: SankofaError, instance: str | None = None) -> Response:
    extra: dict[str, Any] = {}
    headers: dict[str, str] | None = None
    if isinstance(exc, InvalidFieldError):
        extra["errors"] = [i.as_dict() for i in exc.issues]
        indexes = sorted(
            {int(m.group(1)) for i in exc.issues if (m := _INDEX.match(i.field)) is not None}
        )
        if indexes:
            extra["indexes"] = indexes
        extra.update(getattr(exc, "problem_extra", {}))
    elif isinstance(exc, ConflictError) and exc.indexes:
        extra["indexes"] = exc.indexes
    if isinstance(exc, (UnavailableError, DeadlineExceededError, RateLimitedError)):
        headers = _retry_after(exc.retry_after_s)
    elif isinstance(exc, UnauthorizedError):
        # RFC 6750 3: the scheme, and why, for the client library.
        challenge = 'Bearer realm="sankofa"'
        if exc.error:
            challenge += f', error="{exc.error}"'
        headers = {"WWW-Authenticate": challenge}
    elif isinstance(exc, TokenRequestError):
        # RFC 6749 5.1/5.2: error answers of the token endpoint are not cached.
        extra["error"] = exc.error
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="sankofa"'
    elif isinstance(exc, UnsupportedContentEncodingError):
        # RFC 9110 15.5.16: say which coding would have been accepted.
        headers = {"Accept-Encoding": "gzip"}
    if isinstance(exc, DrainingError):
        # Shutting down: the client should reconnect (to another instance).
        headers = {**(headers or {}), "Connection": "close"}
    return problem(
        exc.status,
        exc.type_slug,
        exc.title,
        exc.detail,
        instance=instance,
        headers=headers,
        **extra,
    )


def install(app: FastAPI) -> None:
    """Route every error, ours and the framework's, to problem+json."""

    async def on_sankofa(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SankofaError)
        return from_error(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers) if exc.headers else None
        return problem(
            exc.status_code, slug, title, detail, instance=request.url.path, headers=headers
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",)),
                "message": str(e.get("msg", "invalid")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "request", "message": "invalid"}
        return problem(
            422,
            "invalid-field",
            "Invalid field",
            f"{first['field']}: {first['message']}",
            instance=request.url.path,
            errors=errors,
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, mask_pans(request.url.path))
        return problem(
            500,
            "internal",
            "Internal error",
            "the server failed to handle this request; it has been logged",
            instance=request.url.path,
        )

    app.add_exception_handler(SankofaError, on_sankofa)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
