"""Reading a JSON request body safely: media type, size limit, parse.

* Content-Type must be ``application/json`` (or a ``+json`` type): 415 otherwise.
* A declared Content-Length over the limit is refused before reading (413); an
  undeclared or chunked body is counted while it streams and refused as soon as
  it passes the limit, so a 50 MB body is never held in memory.
* orjson parses; it refuses nesting deeper than 1024 levels (400, no recursion
  blow-up). When it refuses a document for a number it cannot represent
  (``1e999``), the document is parsed again with Decimal numbers so that the
  answer is a 422 naming the field rather than a 400 for the whole body.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from sankofa.errors import (
    BodyTooLargeError,
    MalformedBodyError,
    RequestError,
    UnsupportedMediaTypeError,
)


def _check_media_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {media or 'empty'}"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding} is not accepted here")


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLargeError(f"body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError("client disconnected while sending the body") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise MalformedBodyError("the request body is empty; a JSON document is required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        original = str(exc)
    if "number" in original:
        try:
            return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, RecursionError, UnicodeDecodeError):
            pass
    raise MalformedBodyError(f"the body is not valid JSON: {original}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, max_bytes: int) -> Any:
    _check_media_type(request)
    return parse_json(await read_body(request, max_bytes))
