"""Reading a JSON request body safely: media type, size limit, parse.

* Content-Type must be ``application/json`` (or a ``+json`` type), and a
  ``charset`` parameter, when given, ``utf-8``: 415 otherwise.
* Content-Encoding ``gzip`` is inflated as it streams, within the same limit
  (``api.compression``): a gzip bomb is a 413, corrupt gzip a 400, another
  coding a 415.
* A declared Content-Length over the limit is refused before reading (413); an
  undeclared or chunked body is counted while it streams and refused as soon as
  it passes the limit, so a 50 MB body is never held in memory.
* orjson parses; it refuses nesting deeper than 1024 levels (400, no recursion
  blow-up). A document repeating a key in one object is refused (400): parsers
  disagree on which value wins, so a proxy and this service could read two
  different amounts from the same bytes (RFC 7493 forbids duplicates). When it refuses a document for a number it cannot represent
  (``1e999``), the document is parsed again with Decimal numbers so that the
  answer is a 422 naming the field rather than a 400 for the whole body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from sankofa.api.compression import GzipInflater, request_encoding
from sankofa.errors import (
    BodyTooLargeError,
    MalformedBodyError,
    RequestError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)


def _check_media_type(headers: dict[str, str]) -> str | None:
    """The body's Content-Encoding ("gzip" or None) once its media type is JSON."""
    ctype = headers.get("content-type")
    if ctype is None:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    media, _, params = ctype.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {media or 'empty'}"
        )
    if params:
        _check_charset(params)
    return request_encoding(headers.get("content-encoding"))


def _check_charset(params: str) -> None:
    """JSON is UTF-8 (RFC 8259 section 8.1). A body declared in another charset
    would be read as UTF-8 all the same, and a latin-1 "S\xe3o Paulo" would be
    stored as something else, or refused as malformed: 415 instead, naming it."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset":
            continue
        charset = value.strip().strip('"').lower()
        if charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaTypeError(
                f"JSON must be sent as UTF-8; charset {charset or 'empty'} is not accepted"
            )


class BodyDeadlines:
    """Deadlines for request bodies, checked by one watchdog task.

    ``asyncio.timeout`` costs about 5 us per use on uvloop, paid by every
    request; registering the reading task in a dict costs a fraction of that.
    Four times a second the watchdog cancels tasks whose body is late; the
    reader turns that cancellation into a 408.
    """

    def __init__(self, *, timeout_s: float, check_every_s: float = 0.25) -> None:
        if not timeout_s > 0 or not check_every_s > 0:
            raise ValueError("timeout_s and check_every_s must be > 0")
        self.timeout_s = timeout_s
        self._check_every_s = check_every_s
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="sankofa-body-deadlines")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._check_every_s)
            now = loop.time()
            late = [task for task, deadline in self._reading.items() if deadline <= now]
            for task in late:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()

    async def read(
        self, request: Request, headers: dict[str, str], max_bytes: int, *, gzip: bool = False
    ) -> bytes:
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, read without a deadline
            return await _read_body(request, headers, max_bytes, gzip)
        self._reading[task] = asyncio.get_running_loop().time() + self.timeout_s
        try:
            return await _read_body(request, headers, max_bytes, gzip)
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                task.uncancel()
                raise RequestTimeoutError(
                    f"the body did not arrive within {self.timeout_s:g} s"
                ) from None
            raise
        finally:
            self._reading.pop(task, None)


async def _read_body(
    request: Request, headers: dict[str, str], max_bytes: int, gzip: bool
) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise MalformedBodyError("Content-Length is not a number") from None
        if length > max_bytes:
            raise BodyTooLargeError(
                f"body of {length} bytes exceeds the limit of {max_bytes} bytes"
            )
    chunks: list[bytes] = []
    size = 0
    # A gzipped body is limited twice: on the wire, and inflated, as it streams.
    inflater = GzipInflater(max_bytes) if gzip else None
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLargeError(f"body exceeds the limit of {max_bytes} bytes")
            if inflater is not None:
                inflater.feed(chunk)
            else:
                chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError("client disconnected while sending the body") from None
    return inflater.finish() if inflater is not None else b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise MalformedBodyError("the request body is empty; a JSON document is required")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        original = str(exc)
    else:
        # orjson keeps the last of repeated keys silently. Each key in the text is
        # followed by '":' (pretty printers put spaces after the colon, not before):
        # when that count equals the keys parsed, no key was repeated. Otherwise
        # (spaces before colons, or '":' inside strings) check exactly.
        if body.count(b'":') != _count_keys(parsed):
            _refuse_duplicate_keys(body)
        return parsed
    if "number" in original:
        try:
            parsed = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
            # The stdlib parser lets lone surrogates (\ud800) through, which orjson
            # refuses: such a document is not valid Unicode, whatever its numbers.
            orjson.dumps(parsed, default=str)
            return parsed
        except (ValueError, TypeError, RecursionError, UnicodeDecodeError):
            pass
    raise MalformedBodyError(f"the body is not valid JSON: {original}")


def _count_keys(value: Any) -> int:
    """Keys in every object of a parsed document (iterative: nesting may reach 1024)."""
    total = 0
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        items: Iterable[Any]
        if type(v) is dict:
            total += len(v)
            items = v.values()
        elif type(v) is list:
            items = v
        else:
            continue
        for x in items:
            t = type(x)
            if t is dict or t is list:
                push(x)
    return total


def _refuse_duplicate_keys(body: bytes) -> None:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, val in items:
            if key in seen:
                raise MalformedBodyError(f"the key {key!r} appears twice in one object")
            seen[key] = val
        return seen

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, MalformedBodyError):
            raise
        # orjson accepted what the stdlib refuses (or nesting too deep for it):
        # nothing more to learn about duplicates here.


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(
    request: Request, headers: dict[str, str], max_bytes: int, deadlines: BodyDeadlines
) -> Any:
    """``headers``: from ``api.headers.scan_headers`` (read once per request)."""
    gzip = _check_media_type(headers) == "gzip"
    return parse_json(await deadlines.read(request, headers, max_bytes, gzip=gzip))
