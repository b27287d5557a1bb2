"""gzip on the wire: request bodies in (``Content-Encoding: gzip``) and responses
out (``Accept-Encoding: gzip``).

Requests (``GzipInflater``, used by ``api.body``): the body is inflated as it
streams in, chunk by chunk, and never past the body limit: zlib is asked for at
most one byte more than the room left, so a gzip bomb (a few kilobytes that
would inflate to gigabytes) costs at most the limit in memory before its 413.
A body that is not gzip, is cut short or fails its CRC is a 400. Concatenated
gzip members (RFC 1952 2.2) are one body. Another Content-Encoding is a 415
with ``Accept-Encoding: gzip`` (RFC 9110 15.5.16) so that the client knows what
would do.

Responses (``GzipResponses``, an ASGI middleware): a complete response body of
at least ``min_bytes`` is gzipped when the request's Accept-Encoding allows
gzip (a ``q=0`` refuses it). Streamed responses, responses already encoded and
small ones pass unchanged. Requests that do not ask pay one header scan.
Bodies above ``THREAD_BYTES`` are compressed in a worker thread (zlib releases
the GIL), so a 1000-decision batch does not stop the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sankofa.errors import BodyTooLargeError, MalformedBodyError, UnsupportedContentEncodingError

#: zlib's window bits for the gzip container (16 + the largest window).
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
#: Larger response bodies are compressed off the event loop.
THREAD_BYTES: Final = 64 * 1024
#: Content-Encoding values read as gzip (RFC 9110 8.4.1.3: x-gzip is its alias).
_GZIP_NAMES: Final = frozenset({"gzip", "x-gzip"})


def request_encoding(header: str | None) -> str | None:
    """ "gzip" for a gzipped body, None for an identity one; 415 for anything else
    (another coding, or several stacked)."""
    if header is None:
        return None
    value = header.strip().lower()
    if value in ("", "identity"):
        return None
    if value in _GZIP_NAMES:
        return "gzip"
    raise UnsupportedContentEncodingError(
        f"Content-Encoding {header.strip()[:64]!r} is not accepted; send gzip or identity"
    )


class GzipInflater:
    """Inflates a gzip body fed in chunks, refusing it once it passes ``max_bytes``."""

    __slots__ = ("_chunks", "_d", "_max", "_size")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._max = max_bytes
        self._d = zlib.decompressobj(_GZIP_WBITS)
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self._d.eof:  # the next member of a multi-member body
                self._d = zlib.decompressobj(_GZIP_WBITS)
            try:
                out = self._d.decompress(data, self._max - self._size + 1)
            except zlib.error as exc:
                raise MalformedBodyError(f"the body is not valid gzip: {exc}") from None
            self._size += len(out)
            if self._size > self._max:
                raise BodyTooLargeError(
                    f"the gzip body inflates past the limit of {self._max} bytes"
                )
            self._chunks.append(out)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finish(self) -> bytes:
        if not self._d.eof:
            raise MalformedBodyError("the gzip body is truncated")
        return b"".join(self._chunks)


def accepts_gzip(header: bytes) -> bool:
    """Whether an Accept-Encoding value allows gzip (``gzip`` or ``*`` with q > 0)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in header.decode("latin-1").lower().split(","):
        name, _, params = item.partition(";")
        name = name.strip()
        if name not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if name == "*":
            star_q = q
        else:
            gzip_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def gzip_bytes(body: bytes, level: int) -> bytes:
    """gzip with no timestamp or name: the same body compresses to the same bytes."""
    c = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return c.compress(body) + c.flush()


class GzipResponses:
    """ASGI middleware gzipping complete responses of at least ``min_bytes``."""

    def __init__(self, app: ASGIApp, *, min_bytes: int, level: int) -> None:
        if min_bytes < 0:
            raise ValueError(f"min_bytes must be >= 0, got {min_bytes}")
        if not 1 <= level <= 9:
            raise ValueError(f"level must be 1..9, got {level}")
        self.app = app
        self._min = min_bytes
        self._level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        wanted = False
        for name, value in scope["headers"]:
            if name == b"accept-encoding" and accepts_gzip(value):
                wanted = True
                break
        if not wanted:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        passing = False

        async def gzip_send(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                return
            assert start is not None
            body: bytes = message.get("body", b"")
            headers = list(start.get("headers", []))
            if (
                message.get("more_body", False)
                or len(body) < self._min
                or start["status"] in (204, 304)
                or any(k == b"content-encoding" for k, _ in headers)
            ):
                passing = True
                await send(start)
                await send(message)
                return
            if len(body) >= THREAD_BYTES:
                packed = await asyncio.to_thread(gzip_bytes, body, self._level)
            else:
                packed = gzip_bytes(body, self._level)
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers += [
                (b"content-encoding", b"gzip"),
                (b"content-length", str(len(packed)).encode("ascii")),
                (b"vary", b"Accept-Encoding"),
            ]
            passing = True
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": packed})

        await self.app(scope, receive, gzip_send)
