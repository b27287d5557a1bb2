"""Request headers that steer scoring: priority, timeout, request id.

Header values are never reflected into responses unchecked: a request id is
echoed only when it matches a strict pattern (no CR/LF or other control
characters can reach a response header), otherwise a fresh one is generated.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from typing import Final

from starlette.types import Scope

from sankofa.errors import FieldIssue, InvalidFieldError
from sankofa.queues.priority import Priority, PriorityHeaderError, resolve_priority

REQUEST_ID_HEADER: Final = "x-request-id"
#: A client's request id is echoed (and logged) only when it is this sane token:
#: nothing that could split a header or a log line, nothing too long.
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_TIMEOUT_MS: Final = re.compile(r"^[0-9]{1,9}$")


#: The headers the scoring routes read, taken from the scope in one pass, with
#: the name an error message gives each.
_WANTED: Final = {
    b"content-type": "Content-Type",
    b"content-length": "Content-Length",
    b"content-encoding": "Content-Encoding",
    b"x-priority": "X-Priority",
    b"priority": "Priority",
    b"x-request-timeout-ms": "X-Request-Timeout-Ms",
    b"x-request-id": "X-Request-Id",
}
#: Of those, the list-valued fields (RFC 9110 section 5.3): several field lines
#: mean one value, the lines joined with commas (RFC 9218's Priority is a
#: structured dictionary, whose last ``u`` wins). Every other one is
#: single-valued: a second line is refused (422) rather than one of the two
#: picked, since a proxy in front may have acted on the other one (nginx routes
#: on the first X-Priority line, for one).
_LIST_VALUED: Final = frozenset({b"priority", b"content-encoding"})


def scan_headers(scope: Scope) -> dict[str, str]:
    """The headers the routes need, by lower-case name (ASGI names are lower-case).
    A repeated single-valued header is a 422 naming it; list-valued ones are joined."""
    out: dict[str, str] = {}
    repeated: list[bytes] = []
    for name, value in scope["headers"]:
        if name in _WANTED:
            key = name.decode("latin-1")
            if key in out:
                if name in _LIST_VALUED:
                    out[key] = f"{out[key]}, {value.decode('latin-1')}"
                    continue
                if name not in repeated:
                    repeated.append(name)
            out[key] = value.decode("latin-1")
    if repeated:
        raise InvalidFieldError(
            [
                FieldIssue(f"header {_WANTED[n]}", "must be sent once; it was sent more than once")
                for n in repeated
            ]
        )
    return out


def priority_of(headers: dict[str, str]) -> Priority:
    try:
        return resolve_priority(headers.get("x-priority"), headers.get("priority"))
    except PriorityHeaderError as exc:
        raise InvalidFieldError([FieldIssue("header X-Priority", str(exc))]) from None


#: The shortest budget a request may ask for. Below it a request could not be
#: scored and committed even on an idle machine (a commit alone takes about a
#: millisecond here), so it would only ever come back 504: it is refused as
#: bad input instead, before it costs anything.
MIN_TIMEOUT_MS: Final = 50


def timeout_of(headers: dict[str, str]) -> float | None:
    """``X-Request-Timeout-Ms`` in seconds (it may only shorten the class deadline)."""
    raw = headers.get("x-request-timeout-ms")
    if raw is None:
        return None
    raw = raw.strip()
    if not _TIMEOUT_MS.fullmatch(raw) or int(raw) < MIN_TIMEOUT_MS:
        raise InvalidFieldError(
            [
                FieldIssue(
                    "header X-Request-Timeout-Ms",
                    f"must be a whole number of milliseconds, at least {MIN_TIMEOUT_MS}",
                )
            ]
        )
    return int(raw) / 1000.0


#: Generated request ids: unique per process (pid and a random tag) and cheap
#: (a counter), unlike a UUID per request.
_ID_PREFIX: Final = f"{os.getpid():x}-{secrets.token_hex(3)}-"
_ID_COUNTER: Final = itertools.count(1)


#: Request headers beyond this many bytes in all are refused (431). The HTTP
#: server has already read them by then; a proxy in front (deploy/nginx) should
#: cap them before they reach the service.
MAX_HEADER_BYTES: Final = 16 * 1024


def request_id(given: bytes | None) -> bytes:
    """The client's X-Request-Id when well formed (1-128 characters of
    ``A-Za-z0-9._:-``), else a fresh one. ASCII either way."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}".encode()
