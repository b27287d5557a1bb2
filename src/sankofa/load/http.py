"""A small HTTP/1.1 client for load generation: keep-alive connections, minimal parsing.

httpx builds a request object, a headers multidict, a response object and a
stream per request, and runs its connection pool's state machine around them:
hundreds of microseconds of CPU that the generator would take from the server
on a two-core machine. Here a connection is an ``asyncio.Protocol`` that
writes prebuilt request bytes and parses only what a load test reads: the
status line, ``Content-Length`` (or a chunked body), ``Retry-After`` and
``Connection: close``. The answer goes to a callback, so the generator's hot
path creates no task, future or object per request.

A connection carries one request at a time (no pipelining: each request must
meet the server alone, as a real client's would). A failure is reported as a
negative status code (``constants.CODE_*``), never raised, because at load a
failure is a measurement, not an exception. :class:`HttpClient` wraps the same
connections in an awaitable ``request()`` for everything that is not the hot
path (tests, the ceiling's cost comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

from sankofa.load.constants import (
    CODE_CLOSED,
    CODE_CONNECT,
    CODE_PROTOCOL,
    CODE_RESET,
    CODE_TIMEOUT,
    ERROR_KINDS,
    MAX_HEAD_BYTES,
)

#: Called once per request: (connection, token, status or negative code, Retry-After, body).
#: The connection is typed ``Any`` so that the engine's ``Channel`` protocol,
#: which sets this attribute, matches it exactly.
ResponseHandler = Callable[[Any, int, int, bytes | None, bytes], None]

_CONTENT_LENGTH = b"\r\ncontent-length:"
_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_RETRY_AFTER = b"\r\nretry-after:"
_CONNECTION = b"\r\nconnection:"
_UNTIL_EOF = -1


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: host, port, the ``Host`` header and a base path."""

    host: str
    port: int
    host_header: str
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"url must be http://HOST:PORT (no TLS), not {url!r}")
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        port = parts.port or 80
        host_header = parts.netloc.rpartition("@")[2]
        return cls(parts.hostname, port, host_header, parts.path.rstrip("/"))


def build_request(
    target: Target,
    path: str,
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
    *,
    method: str = "POST",
) -> bytes:
    """The complete bytes of one request, built once before a run."""
    lines = [f"{method} {target.base_path}{path} HTTP/1.1", f"Host: {target.host_header}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _unset_handler(conn: Connection, token: int, status: int, ra: bytes | None, b: bytes) -> None:
    raise RuntimeError("Connection.on_response was not set before send()")


class Connection(asyncio.Protocol):
    """One keep-alive connection; reconnects by itself when a request finds it closed.

    ``on_response`` is called exactly once per :meth:`send`, from the event
    loop, with the HTTP status or a negative ``CODE_*``. After a transport
    failure the connection is closed and the next ``send`` opens a new one,
    whose connect time counts in that request's latency, as for a real client.
    """

    __slots__ = (
        "_body_len",
        "_body_start",
        "_buf",
        "_chunked",
        "_close_after",
        "_connect_task",
        "_connect_timeout_s",
        "_head_status",
        "_keep_body",
        "_loop",
        "_pending",
        "_retry_after",
        "_transport",
        "host",
        "on_response",
        "port",
        "token",
    )

    def __init__(
        self,
        *,
        host: str,
        port: int,
        connect_timeout_s: float = 5.0,
        keep_body: bool = True,
        on_response: ResponseHandler = _unset_handler,
    ) -> None:
        if connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be > 0")
        self.host = host
        self.port = port
        self.on_response = on_response
        #: The request in flight, or None when idle.
        self.token: int | None = None
        self._connect_timeout_s = connect_timeout_s
        self._keep_body = keep_body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._pending: bytes | None = None
        self._buf = bytearray()
        self._head_status = 0
        self._body_start = 0
        self._body_len = 0
        self._chunked = False
        self._close_after = False
        self._retry_after: bytes | None = None

    # -- life cycle -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def connect(self) -> None:
        """Open the connection now (before a timed phase). Raises ``OSError`` / ``TimeoutError``."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        async with asyncio.timeout(self._connect_timeout_s):
            await loop.create_connection(lambda: self, self.host, self.port)

    def close(self) -> None:
        """Close without reporting: for an idle connection at the end of a run."""
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()

    def abort(self, code: int = CODE_TIMEOUT) -> None:
        """Give up the request in flight (reported with ``code``) and drop the connection."""
        token = self.token
        self._drop_transport()
        if token is not None:
            self._finish(token, code, None, b"")

    # -- sending ------------------------------------------------------------------

    def send(self, data: bytes, token: int) -> None:
        """Write one complete request; ``on_response`` gets its answer under ``token``."""
        if self.token is not None:
            raise RuntimeError("Connection.send: a request is already in flight")
        self.token = token
        transport = self._transport
        if transport is None:
            self._pending = data
            self._start_connect()
            return
        transport.write(data)

    def _start_connect(self) -> None:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        self._loop = loop
        task = loop.create_task(self.connect())
        self._connect_task = task
        task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        if self._connect_task is task:
            self._connect_task = None
        if task.cancelled():
            return
        data, self._pending = self._pending, None
        token = self.token
        if task.exception() is not None or self._transport is None:
            self._drop_transport()
            if token is not None:
                self._finish(token, CODE_CONNECT, None, b"")
            return
        if token is not None and data is not None:
            self._transport.write(data)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._reset_parser()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        token = self.token
        if token is None:
            self._reset_parser()
            return
        if exc is None and self._head_status and self._body_len == _UNTIL_EOF:
            # A body delimited by the end of the connection (no length, not chunked).
            body = bytes(self._buf[self._body_start :]) if self._keep_body else b""
            self._finish(token, self._head_status, self._retry_after, body)
            return
        self._finish(token, CODE_RESET if exc is not None else CODE_CLOSED, None, b"")

    def data_received(self, data: bytes) -> None:
        token = self.token
        if token is None:
            # Bytes nobody asked for: this connection can no longer be trusted.
            self._drop_transport()
            return
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        if not self._head_status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._protocol_error(token)
                else:
                    self._buf = bytearray(buf)
                return
            if not self._parse_head(buf, end):
                self._protocol_error(token)
                return
        if self._chunked:
            try:
                chunked = _dechunk(buf, self._body_start)
            except ValueError:
                self._protocol_error(token)
                return
            if chunked is None:
                self._keep(buf)
                return
            self._complete(token, chunked if self._keep_body else b"")
            return
        if self._body_len == _UNTIL_EOF:
            self._keep(buf)
            return
        end_of_body = self._body_start + self._body_len
        have = len(buf)
        if have < end_of_body:
            self._keep(buf)
            return
        if have > end_of_body:
            self._protocol_error(token)  # more than one answer to one request
            return
        body = bytes(buf[self._body_start :]) if self._keep_body and self._body_len else b""
        self._complete(token, body)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports it

    # -- parsing ------------------------------------------------------------------

    def _parse_head(self, buf: bytes | bytearray, end: int) -> bool:
        if buf[:7] != b"HTTP/1." or buf[12:13] not in (b" ", b"\r"):
            return False
        try:
            status = int(buf[9:12])
        except ValueError:
            return False
        if status < 100:
            return False
        head = bytes(buf[:end]).lower()
        self._body_start = end + 4
        length = _header(head, _CONTENT_LENGTH)
        if length is not None:
            try:
                self._body_len = int(length)
            except ValueError:
                return False
            if self._body_len < 0:
                return False
        elif b"chunked" in (_header(head, _TRANSFER_ENCODING) or b""):
            self._chunked = True
        elif status in (204, 304) or status < 200:
            self._body_len = 0
        else:
            self._body_len = _UNTIL_EOF
        if status >= 300:
            self._retry_after = _header(head, _RETRY_AFTER)
        connection = _header(head, _CONNECTION)
        self._close_after = (connection is not None and b"close" in connection) or (
            buf[7:8] == b"0" and (connection is None or b"keep-alive" not in connection)
        )
        self._head_status = status
        return True

    def _keep(self, buf: bytes | bytearray) -> None:
        if not isinstance(buf, bytearray):
            self._buf = bytearray(buf)

    def _complete(self, token: int, body: bytes) -> None:
        status, retry_after, close_after = self._head_status, self._retry_after, self._close_after
        self._reset_parser()
        if close_after:
            self._drop_transport()
        self._finish(token, status, retry_after, body)

    def _protocol_error(self, token: int) -> None:
        self._drop_transport()
        self._finish(token, CODE_PROTOCOL, None, b"")

    def _finish(self, token: int, status: int, retry_after: bytes | None, body: bytes) -> None:
        self.token = None
        self.on_response(self, token, status, retry_after, body)

    def _drop_transport(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        self._pending = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        self._reset_parser()

    def _reset_parser(self) -> None:
        self._buf = bytearray()
        self._head_status = 0
        self._body_start = 0
        self._body_len = 0
        self._chunked = False
        self._close_after = False
        self._retry_after = None


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (given as ``b"\\r\\nname:"``) in a lower-cased head."""
    i = head.find(name)
    if i < 0:
        return None
    j = head.find(b"\r\n", i + 2)
    return head[i + len(name) : j if j >= 0 else len(head)].strip()


def _dechunk(buf: bytes | bytearray, start: int) -> bytes | None:
    """A chunked body from ``start``: the body, or None while incomplete (ValueError: malformed)."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        size = int(size_text, 16)  # ValueError when malformed
        if size < 0:
            raise ValueError("negative chunk size")
        if size == 0:
            # Trailers (if any) end with an empty line.
            if buf.find(b"\r\n\r\n", eol) < 0:
                if len(buf) - eol > MAX_HEAD_BYTES:
                    raise ValueError("trailers too large")
                return None
            return bytes(out)
        data_start = eol + 2
        data_end = data_start + size
        if len(buf) < data_end + 2:
            return None
        out += buf[data_start:data_end]
        pos = data_end + 2


class Response(NamedTuple):
    status: int
    body: bytes
    retry_after: bytes | None


class TransportError(Exception):
    """A request got no HTTP answer; ``kind`` is one of ``constants.ERROR_KINDS``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.kind = ERROR_KINDS.get(code, "unknown")
        super().__init__(f"HTTP request failed: {self.kind}")


class HttpClient:
    """Keep-alive connections behind an awaitable ``request()``; a request waits for a free one.

    Not the generator's hot path (that drives :class:`Connection` with
    callbacks): this is for tests and for measuring the client's cost.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 1,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.target = Target.parse(url)
        self._timeout_s = timeout_s
        self._futures: dict[int, asyncio.Future[Response]] = {}
        self._idle = [
            Connection(
                host=self.target.host,
                port=self.target.port,
                connect_timeout_s=connect_timeout_s,
                on_response=self._on_response,
            )
            for _ in range(connections)
        ]
        self._all = list(self._idle)
        self._waiters: list[asyncio.Future[Connection]] = []
        self._next_token = 0

    async def request(
        self,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        method: str = "POST",
    ) -> Response:
        """Send one request; raises :class:`TransportError` when no HTTP answer came."""
        return await self.send_raw(build_request(self.target, path, body, headers, method=method))

    async def send_raw(self, data: bytes) -> Response:
        """Send prebuilt request bytes (see :func:`build_request`)."""
        conn = await self._acquire()
        token = self._next_token
        self._next_token += 1
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        try:
            conn.send(data, token)
            async with asyncio.timeout(self._timeout_s):
                return await fut
        except TimeoutError:
            self._futures.pop(token, None)
            if conn.token == token:
                conn.abort(CODE_TIMEOUT)
            raise TransportError(CODE_TIMEOUT) from None
        except asyncio.CancelledError:
            # The answer can no longer go to anyone: drop the connection with it.
            self._futures.pop(token, None)
            if conn.token == token:
                conn.abort(CODE_TIMEOUT)
            raise
        finally:
            self._futures.pop(token, None)
            self._release(conn)

    def _on_response(
        self, conn: Connection, token: int, status: int, retry_after: bytes | None, body: bytes
    ) -> None:
        fut = self._futures.get(token)
        if fut is None or fut.done():
            return
        if status < 0:
            fut.set_exception(TransportError(status))
        else:
            fut.set_result(Response(status, body, retry_after))

    async def _acquire(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as we were cancelled
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def _release(self, conn: Connection) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def aclose(self) -> None:
        for conn in self._all:
            conn.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
