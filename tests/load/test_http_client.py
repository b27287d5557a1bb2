"""The load generator's HTTP client: parsing, keep-alive, and failures as kinds, not exceptions."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sankofa.load.constants import CODE_CLOSED, CODE_PROTOCOL, CODE_RESET
from sankofa.load.http import Connection, HttpClient, Target, TransportError, build_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Server:
    """A tiny loopback server whose behaviour per connection is given by the test."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> _Server:
        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            finally:
                w.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _read_request(r: asyncio.StreamReader) -> bytes | None:
    """One request (head + Content-Length body), or None at end of stream."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await r.readexactly(length)


def _answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _echo_len(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while (req := await _read_request(r)) is not None:
        w.write(_answer(b'{"len":%d}' % len(req)))
        await w.drain()


@pytest.fixture
async def echo() -> AsyncIterator[_Server]:
    async with _Server(_echo_len) as s:
        yield s


async def test_keep_alive_reuses_one_connection(echo: _Server) -> None:
    async with HttpClient(echo.url, connections=1) as client:
        for _ in range(5):
            r = await client.request("/x", b'{"a":1}', [("X-Priority", "low")])
            assert r.status == 200
            assert r.body.startswith(b'{"len":')
    assert echo.connections == 1


async def test_requests_wait_for_a_free_connection(echo: _Server) -> None:
    async with HttpClient(echo.url, connections=2) as client:
        answers = await asyncio.gather(*(client.request("/", b"{}") for _ in range(10)))
    assert [a.status for a in answers] == [200] * 10
    assert echo.connections <= 2


class _FakeTransport:
    """Records writes; lets a test feed a Connection's parser byte by byte."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def _fed(chunks: list[bytes], *, keep_body: bool = True) -> tuple[list[tuple[Any, ...]], Any]:
    answers: list[tuple[Any, ...]] = []
    conn = Connection(
        host="127.0.0.1",
        port=1,
        keep_body=keep_body,
        on_response=lambda c, token, status, ra, body: answers.append((token, status, ra, body)),
    )
    transport = _FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.send(b"GET / HTTP/1.1\r\n\r\n", 7)
    for chunk in chunks:
        conn.data_received(chunk)
    return answers, transport


def test_content_length_body_split_across_reads() -> None:
    raw = _answer(b'{"decision":"approve"}', extra="x-pad: 1\r\n")
    answers, transport = _fed([raw[i : i + 1] for i in range(len(raw))])
    assert answers == [(7, 200, None, b'{"decision":"approve"}')]
    assert not transport.closed


def test_header_names_are_case_insensitive_and_retry_after_is_read() -> None:
    raw = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy"
    answers, _ = _fed([raw])
    assert answers == [(7, 503, b"2", b"busy")]


def test_chunked_body() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    answers, _ = _fed([raw[:30], raw[30:41], raw[41:]])
    assert answers == [(7, 200, None, b"abcde")]


def test_body_not_kept_when_not_wanted() -> None:
    answers, _ = _fed([_answer(b"0123456789")], keep_body=False)
    assert answers == [(7, 200, None, b"")]


def test_connection_close_drops_the_connection_after_the_answer() -> None:
    answers, transport = _fed([_answer(b"{}", extra="connection: close\r\n")])
    assert answers[0][1] == 200
    assert transport.closed


def test_garbage_is_a_protocol_error() -> None:
    answers, transport = _fed([b"HELLO THERE\r\n\r\n"])
    assert answers == [(7, CODE_PROTOCOL, None, b"")]
    assert transport.closed


def test_two_answers_to_one_request_is_a_protocol_error() -> None:
    answers, _ = _fed([_answer(b"{}") + _answer(b"{}")])
    assert answers == [(7, CODE_PROTOCOL, None, b"")]


def _append_status_to(answers: list[int]) -> Any:
    return lambda c, t, status, ra, b: answers.append(status)


def test_peer_closing_mid_answer_is_closed_and_a_reset_is_reset() -> None:
    for exc, code in ((None, CODE_CLOSED), (ConnectionResetError(), CODE_RESET)):
        answers: list[int] = []
        conn = Connection(host="127.0.0.1", port=1, on_response=_append_status_to(answers))
        conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
        conn.send(b"GET / HTTP/1.1\r\n\r\n", 1)
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123")
        conn.connection_lost(exc)
        assert answers == [code]
        assert not conn.connected


async def _reset_on_request(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await _read_request(r)
    sock = w.get_extra_info("socket")
    # SO_LINGER 0: close() sends a RST instead of a FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def test_reset_by_a_real_server_is_a_reset_and_the_next_request_reconnects() -> None:
    calls = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await _reset_on_request(r, w)
        else:
            await _echo_len(r, w)

    async with _Server(handler) as server, HttpClient(server.url, connections=1) as client:
        with pytest.raises(TransportError) as info:
            await client.request("/", b"{}")
        assert info.value.kind in ("reset", "closed")
        assert (await client.request("/", b"{}")).status == 200
        assert server.connections == 2


async def test_timeout_and_refused_connection_are_kinds() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        await r.read()  # never answers; returns when the client gives up

    async with _Server(silent) as server, HttpClient(server.url, timeout_s=0.2) as client:
        with pytest.raises(TransportError) as info:
            await client.request("/", b"{}")
        assert info.value.kind == "timeout"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(TransportError) as info:
                await client.request("/", b"{}")
            assert info.value.kind == "connect"


def test_request_bytes_and_target() -> None:
    target = Target.parse("http://127.0.0.1:8000/api/")
    assert (target.host, target.port, target.base_path) == ("127.0.0.1", 8000, "/api")
    raw = build_request(target, "/v1/transactions", b'{"a":1}', [("X-Priority", "high")])
    assert raw == (
        b"POST /api/v1/transactions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        b'X-Priority: high\r\nContent-Length: 7\r\n\r\n{"a":1}'
    )
    with pytest.raises(ValueError, match="no TLS"):
        Target.parse("https://example.test")
