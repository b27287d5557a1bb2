"""Request headers that steer scoring: priority, timeout, request id.

Header values are never reflected into responses unchecked: a request id is
echoed only when it matches a strict pattern (no CR/LF or other control
characters can reach a response header), otherwise a fresh one is generated.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sankofa.errors import FieldIssue, InvalidFieldError
from sankofa.queues.priority import Priority, PriorityHeaderError, resolve_priority

REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_TIMEOUT_MS: Final = re.compile(r"^[0-9]{1,9}$")


def priority_of(headers: Headers) -> Priority:
    try:
        return resolve_priority(headers.get("x-priority"), headers.get("priority"))
    except PriorityHeaderError as exc:
        raise InvalidFieldError([FieldIssue("header X-Priority", str(exc))]) from None


def timeout_of(headers: Headers) -> float | None:
    """``X-Request-Timeout-Ms`` in seconds (it may only shorten the class deadline)."""
    raw = headers.get("x-request-timeout-ms")
    if raw is None:
        return None
    raw = raw.strip()
    if not _TIMEOUT_MS.match(raw) or int(raw) == 0:
        raise InvalidFieldError(
            [
                FieldIssue(
                    "header X-Request-Timeout-Ms", "must be a whole number of milliseconds > 0"
                )
            ]
        )
    return int(raw) / 1000.0


class RequestIdMiddleware:
    """Echo a well-formed X-Request-Id, or generate one, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        rid: bytes
        if given is not None and _REQUEST_ID.match(given.decode("latin-1")):
            rid = given
        else:
            rid = uuid.uuid4().hex.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)
