"""Regression tests for ../shared/cases.md that need the real server over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any

import asyncpg
import httpx
import numpy as np
import orjson
import pytest

from conftest import LiveServer
from sankofa.api.routes import _json
from sankofa.store.repository import decode_features
from tests_support import tx


def raw_http(
    port: int, head: bytes, body: bytes = b"", *, read: bool = True, timeout_s: float = 10.0
) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(head + body)
        if not read:
            return b""
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _complete(resp: bytes) -> bool:
    head, _, body = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_fifty_megabyte_body_is_413_without_reading_it(live_server: LiveServer) -> None:
    """C7: refused from Content-Length alone; the server keeps serving."""
    head = (
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    resp = raw_http(live_server.port, head, b"{" * 1024)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    assert b"application/problem+json" in resp
    assert httpx.get(f"{live_server.url}/health/live").status_code == 200


def test_chunked_body_over_the_limit_is_413(live_server: LiveServer) -> None:
    """C7: no Content-Length at all: counted while streaming, refused past the limit."""
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(80)) + b"0\r\n\r\n"
    head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    resp = raw_http(live_server.port, head, body)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    assert httpx.get(f"{live_server.url}/health/live").status_code == 200


def test_false_small_content_length(live_server: LiveServer, database_url: str) -> None:
    """C7: a body longer than its declared length is cut at the declared length: the
    request is malformed JSON (400), the rest is garbage the server refuses, and it
    keeps serving. Nothing is stored."""
    body = orjson.dumps(tx(77))
    head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    resp = raw_http(live_server.port, head, body)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:200]
    assert httpx.get(f"{live_server.url}/health/live").status_code == 200

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM transactions")
            return n
        finally:
            await conn.close()

    assert asyncio.run(stored()) == 0


def test_deep_json_over_http_keeps_the_server_serving(live_server: LiveServer) -> None:
    """C6 over a real socket."""
    body = b"[" * 20_000 + b"]" * 20_000
    r = httpx.post(
        f"{live_server.url}/v1/transactions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{live_server.url}/v1/transactions", json=tx(1)).status_code == 200


def test_thousand_client_disconnects_leak_nothing(
    live_server: LiveServer, database_url: str
) -> None:
    """C13: clients that vanish right after sending leave no half-stored transaction, no
    leaked database connection, and a healthy service."""
    for i in range(1000):
        body = orjson.dumps(tx(i, customer_id=f"c{i % 50}"))
        head = (
            b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        raw_http(live_server.port, head, body, read=False)

    async def check() -> tuple[int, int, int]:
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(100):  # the server finishes what it accepted
                before = await conn.fetchval("SELECT count(*) FROM transactions")
                await asyncio.sleep(0.1)
                if before == await conn.fetchval("SELECT count(*) FROM transactions"):
                    break
            # A transaction and its decision are one row: a transaction is either
            # there with its decision or not at all; check the decision is whole.
            orphans = await conn.fetchval(
                "SELECT count(*) FROM transactions WHERE decision IS NULL OR features IS NULL"
            )
            connections = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            total = await conn.fetchval("SELECT count(*) FROM transactions")
            return orphans, connections, total
        finally:
            await conn.close()

    orphans, connections, total = asyncio.run(check())
    assert orphans == 0
    assert connections <= 8  # the pool's maximum: nothing leaked
    assert total <= 1000
    r = httpx.post(f"{live_server.url}/v1/transactions", json=tx(5000))
    assert r.status_code == 200
    assert httpx.get(f"{live_server.url}/health/ready").status_code == 200


def test_sigterm_with_hundreds_queued(live_server: LiveServer, database_url: str) -> None:
    """C15: every request gets an answer (200, or 503 with Retry-After), every 200 is
    stored, and the process exits within the grace period."""
    assert live_server.proc is not None
    results: list[Any] = []

    async def fire() -> None:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=live_server.url, limits=limits, timeout=30.0) as c:

            async def one(i: int) -> Any:
                try:
                    return await c.post("/v1/transactions", json=tx(i, customer_id=f"c{i % 40}"))
                except httpx.HTTPError as exc:
                    return exc

            tasks = [asyncio.create_task(one(i)) for i in range(400)]
            await asyncio.sleep(0.05)
            os.kill(live_server.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
            results.extend(await asyncio.gather(*tasks))

    t0 = time.monotonic()
    asyncio.run(fire())
    code = live_server.proc.wait(timeout=30)
    elapsed = time.monotonic() - t0
    assert code == 0
    assert elapsed < 15  # drain grace 10 s
    answered = [r for r in results if isinstance(r, httpx.Response)]
    ok = {r.json()["transaction_id"] for r in answered if r.status_code == 200}
    for r in answered:
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert "retry-after" in r.headers
    # Connections refused after the listener closed never reached the service: not
    # answered, and nothing of theirs is stored either.
    refused = [r for r in results if not isinstance(r, httpx.Response)]
    assert all(isinstance(r, httpx.ConnectError | httpx.RemoteProtocolError) for r in refused), (
        refused[:3]
    )

    async def stored() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT transaction_id FROM transactions")
            return {r["transaction_id"] for r in rows}
        finally:
            await conn.close()

    in_db = asyncio.run(stored())
    assert ok <= in_db  # every 200 is stored


def test_numpy_values_reach_json_as_plain_numbers() -> None:
    """C10."""
    body = {"f": np.float64(0.25), "i": np.int64(3), "a": np.arange(3), "b": np.bool_(True)}
    resp = _json(body)
    assert orjson.loads(resp.body) == {"f": 0.25, "i": 3, "a": [0, 1, 2], "b": True}


async def test_offsets_are_honoured_for_night_and_weekend(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """C5: Saturday 23:30 at -03:00 is Sunday 02:30 UTC: weekend, not night."""
    r = await client.post("/v1/transactions", json=tx(1, timestamp="2018-04-07T23:30:00-03:00"))
    assert r.status_code == 200
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-1'")
    )
    assert (f[1], f[2]) == (1.0, 0.0)
    # Monday 05:00 at +14:00 is Sunday 15:00 UTC: night, not weekend.
    r = await client.post("/v1/transactions", json=tx(2, timestamp="2018-04-09T05:00:00+14:00"))
    assert r.status_code == 200
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-2'")
    )
    assert (f[1], f[2]) == (0.0, 1.0)
    stored = await db.fetchval("SELECT event_time FROM transactions WHERE transaction_id='tx-2'")
    assert stored.isoformat() == "2018-04-08T15:00:00+00:00"


@pytest.mark.parametrize(
    "value", ["2018-04-01T10:00:00", "", "2018-04-01T23:59:60Z", "2018-04-01T10:00:00+25:00"]
)
async def test_bad_timestamps_never_500(client: httpx.AsyncClient, value: str) -> None:
    r = await client.post("/v1/transactions", json=tx(timestamp=value))
    assert r.status_code == 422


@pytest.mark.parametrize(
    "timestamp, stored_local",
    [
        ("2018-04-01T13:00:00Z", "2018-04-01T13:00:00+00:00"),
        ("2018-04-02T03:00:00+14:00", "2018-04-02T03:00:00+14:00"),
        ("2018-04-01T01:00:00-12:00", "2018-04-01T01:00:00-12:00"),
    ],
)
async def test_offsets_z_and_14_hours_are_accepted_and_kept(
    client: httpx.AsyncClient, db: asyncpg.Connection, timestamp: str, stored_local: str
) -> None:
    """C5: "Z" and "+14:00" are the same instant as any other spelling, stored once
    in UTC and read back in the transaction's own offset."""
    r = await client.post("/v1/transactions", json=tx(1, timestamp=timestamp))
    assert r.status_code == 200, r.text
    stored = await db.fetchval("SELECT event_time FROM transactions WHERE transaction_id='tx-1'")
    assert stored.isoformat() == "2018-04-01T13:00:00+00:00"
    read = await client.get("/v1/transactions/tx-1")
    assert read.json()["transaction"]["timestamp"] == stored_local


@pytest.mark.parametrize(
    "value", ["2018-04-01T10:00:00", "", "2018-04-01T23:59:60Z", "2018-04-01T10:00:00+14:30"]
)
async def test_bad_timestamps_name_the_field_and_store_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    """C5: naive and malformed are 422 naming ``timestamp``; nothing is stored."""
    r = await client.post("/v1/transactions", json=tx(timestamp=value))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["timestamp"]
    assert await db.fetchval("SELECT count(*) FROM transactions") == 0


_INJECTED = [
    b"X-Request-Id: abc\nSet-Cookie: x=1",
    b"X-Request-Id: abc\rSet-Cookie: x=1",
    b"X-Request-Id: abc\r\n Set-Cookie: x=1",  # obsolete line folding
    b"X-Request-Id: ab\x00c",
    b"X-Request-Id: ab\x01c",
    b"X-Priority: critical\r\n Set-Cookie: x=1",
    b"X-Priority: critical\rSet-Cookie: x=1",
    b"X-Priority: critical\nSet-Cookie: x=1",
    b"X-Priority: crit\tical",
    # Valid HTTP, reaching the service: an id it does not echo, a priority it refuses.
    b"X-Request-Id: ab c\r\nX-Priority: crit\tical",
    b"X-Priority: critical\x7f",
    b"Priority: u=0\x1b[31m",
]


def test_control_characters_in_headers_are_refused_never_reflected(
    live_server: LiveServer, database_url: str
) -> None:
    """C17 over a real socket (an in-process client cannot even send CR or LF in a
    header): each is refused, by the HTTP server (400) or the service (422), and
    nothing the client sent in those headers comes back in a response header."""
    body = orjson.dumps(tx(17))
    for header in _INJECTED:
        head = (
            b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + header
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        resp = raw_http(live_server.port, head, body)
        status_line, _, rest = resp.partition(b"\r\n")
        assert status_line.split(b" ")[1] in (b"400", b"422"), (header, resp[:300])
        response_head = rest.partition(b"\r\n\r\n")[0].lower()
        assert b"set-cookie" not in response_head, (header, resp[:300])
        for line in response_head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name == b"x-request-id":
                # A fresh id, never what the client sent (or part of it).
                assert value.strip() not in (b"abc", b"ab", b"c", b"ab c"), (header, line)
        assert httpx.get(f"{live_server.url}/health/live").status_code == 200

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM transactions")
            return n
        finally:
            await conn.close()

    assert asyncio.run(stored()) == 0
