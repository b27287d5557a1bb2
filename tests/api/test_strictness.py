"""Bad input the service once let through or answered vaguely (issue 8), each kind
refused the same way everywhere it can arrive: repeated single-valued headers,
identifiers with edge whitespace or control characters, explicit nulls, zoned
IPv6 addresses, UTC offsets no place uses, charsets other than UTF-8, labels
dated before their transaction; and an OpenAPI description that lists what each
route really answers. Every refusal stores nothing.

Through the real app (in process, over httpx) with real PostgreSQL and Redis,
and the header cases also through a real ``sankofa serve`` over a socket, since
duplicate header lines are a property of the HTTP server's parsing too.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest

from conftest import LiveServer, server_env
from sankofa.settings import Settings
from tests_support import tx

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


async def count(db: asyncpg.Connection, table: str = "transactions") -> int:
    n: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return n


def fields(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    return [e["field"] for e in r.json()["errors"]]


# -- repeated headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("X-Priority", ["critical", "low"]),
        ("X-Priority", ["critical", "critical"]),
        ("X-Request-Timeout-Ms", ["500", "900"]),
        ("Content-Type", ["application/json", "application/json"]),
        ("X-Request-Id", ["a-1", "a-2"]),
    ],
)
@pytest.mark.parametrize("path", ["/v1/transactions", "/v1/transactions/batch", "/v1/labels"])
async def test_a_repeated_single_valued_header_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, name: str, values: list[str], path: str
) -> None:
    body = {
        "/v1/transactions": tx(),
        "/v1/transactions/batch": {"transactions": [tx()]},
        "/v1/labels": {"labels": [{"transaction_id": "tx-1", "fraud": True}]},
    }[path]
    headers = [(name, v) for v in values]
    if name != "Content-Type":
        headers.append(("Content-Type", "application/json"))
    r = await client.post(path, content=orjson.dumps(body), headers=headers)
    assert fields(r) == [f"header {name}"]
    assert "more than once" in r.json()["errors"][0]["message"]
    # Neither of the two ids is echoed.
    assert r.headers["x-request-id"] not in values
    assert await count(db) == 0 and await count(db, "labels") == 0


async def test_repeated_priority_lines_are_one_dictionary(client: httpx.AsyncClient) -> None:
    """RFC 9218's Priority is list-valued: two lines are one dictionary, the last
    ``u`` wins (RFC 8941), as for ``u=0, u=5`` on one line."""
    r = await client.post(
        "/v1/transactions", json=tx(1), headers=[("Priority", "u=0"), ("Priority", "u=5")]
    )
    assert r.status_code == 200, r.text
    assert r.json()["priority"] == "low"


async def test_a_repeated_request_id_is_not_echoed_on_reads(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live", headers=[("X-Request-Id", "a-1"), ("X-Request-Id", "a-2")])
    assert r.status_code == 200
    assert r.headers["x-request-id"] not in ("a-1", "a-2", "a-1, a-2")


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_repeated_headers_through_the_real_server(
    live_server: LiveServer, database_url: str
) -> None:
    body = orjson.dumps(tx(5))
    head = (
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Priority: critical\r\nX-Priority: low\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    reply = _raw(live_server.port, head + body)
    assert reply.startswith(b"HTTP/1.1 422"), reply[:300]
    assert b"header X-Priority" in reply
    # The same request with one X-Priority line is scored.
    one = head.replace(b"X-Priority: low\r\n", b"")
    reply = _raw(live_server.port, one + body)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert b'"priority":"critical"' in reply

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM transactions")
            return n
        finally:
            await conn.close()

    assert asyncio.run(stored()) == 1


# -- identifiers ---------------------------------------------------------------------

EDGY_IDS = [" c1", "c1 ", "\tc1", "c1\n", "c\x00", "c\x1b[31m", "c\u200b1", "\u00a0c1", "c1\u3000"]


@pytest.mark.parametrize("value", EDGY_IDS, ids=repr)
@pytest.mark.parametrize("field", ["transaction_id", "customer_id", "terminal_id", "device_id"])
async def test_identifiers_with_edge_whitespace_or_controls_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(**{field: value}))
    assert fields(r) == [field]
    assert await count(db) == 0


async def test_inner_spaces_in_identifiers_are_kept(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/transactions", json=tx(customer_id="Ana Maria", terminal_id="Loja 7")
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [" tx-1", "tx-1 ", "tx-1\n", "tx\x001"], ids=repr)
async def test_edgy_ids_in_labels_and_reads_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    assert (await client.post("/v1/transactions", json=tx(1))).status_code == 200
    r = await client.post("/v1/labels", json={"labels": [{"transaction_id": value, "fraud": True}]})
    assert fields(r) == ["labels[0].transaction_id"]
    assert await count(db, "labels") == 0
    r = await client.get(f"/v1/transactions/{quote(value)}")
    assert r.status_code == 422, r.text


# -- nulls -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["transaction_id", "timestamp", "amount", "customer_id", "terminal_id", "type", "currency"],
)
async def test_null_where_the_schema_has_none_is_422_naming_the_field(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(**{field: None}))
    assert fields(r) == [field]
    assert "null" in r.json()["errors"][0]["message"]
    r = await client.post(
        "/v1/transactions/batch", json={"transactions": [tx(1), tx(2, **{field: None})]}
    )
    assert fields(r) == [f"transactions[1].{field}"]
    assert r.json()["indexes"] == [1]
    assert await count(db) == 0


async def test_a_missing_required_field_says_required(client: httpx.AsyncClient) -> None:
    body = tx()
    del body["customer_id"]
    r = await client.post("/v1/transactions", json=body)
    assert fields(r) == ["customer_id"]
    assert r.json()["errors"][0]["message"] == "is required"


async def test_null_optional_fields_are_absent(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/transactions",
        json=tx(channel=None, device_id=None, ip_address=None, metadata=None),
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("field", ["transaction_id", "fraud"])
async def test_null_in_a_label_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str
) -> None:
    assert (await client.post("/v1/transactions", json=tx(1))).status_code == 200
    label: dict[str, Any] = {"transaction_id": "tx-1", "fraud": True, field: None}
    r = await client.post("/v1/labels", json={"labels": [label]})
    assert fields(r) == [f"labels[0].{field}"]
    assert "null" in r.json()["errors"][0]["message"]
    assert await count(db, "labels") == 0


# -- IPv6 zones --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["fe80::1%eth0", "fe80::1%1", "fe80::1%25eth0"])
async def test_a_zoned_ipv6_address_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(ip_address=value))
    assert fields(r) == ["ip_address"]
    assert "zone" in r.json()["errors"][0]["message"]
    assert await count(db) == 0


async def test_the_same_address_without_its_zone_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/transactions", json=tx(ip_address="fe80::1"))
    assert r.status_code == 200, r.text


# -- UTC offsets -------------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["+14:01", "-14:01", "+15:00", "-23:59", "+23:00", "+99:00"])
async def test_offsets_beyond_14_hours_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, offset: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(timestamp=f"2018-04-01T10:00:00{offset}"))
    assert fields(r) == ["timestamp"]
    assert "-14:00 and +14:00" in r.json()["errors"][0]["message"]
    assert await count(db) == 0


@pytest.mark.parametrize("offset", ["+14:00", "-14:00", "+05:45", "-00:00"])
async def test_offsets_within_14_hours_are_accepted(client: httpx.AsyncClient, offset: str) -> None:
    r = await client.post("/v1/transactions", json=tx(timestamp=f"2018-04-01T10:00:00{offset}"))
    assert r.status_code == 200, r.text


async def test_labelled_at_offsets_follow_the_same_rule(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    assert (await client.post("/v1/transactions", json=tx(1))).status_code == 200
    label = {"transaction_id": "tx-1", "fraud": True, "labelled_at": "2018-04-02T10:00:00+15:00"}
    r = await client.post("/v1/labels", json={"labels": [label]})
    assert fields(r) == ["labels[0].labelled_at"]
    assert await count(db, "labels") == 0


# -- charsets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json; charset=latin-1",
        "application/json; charset=ISO-8859-1",
        'application/json; charset="windows-1252"',
        "application/json;charset=utf-16",
        "application/json; charset=us-ascii",
        "application/json; charset=",
        "application/problem+json; charset=latin1",
    ],
)
@pytest.mark.parametrize("path", ["/v1/transactions", "/v1/transactions/batch", "/v1/labels"])
async def test_a_charset_other_than_utf8_is_415(
    client: httpx.AsyncClient, db: asyncpg.Connection, ctype: str, path: str
) -> None:
    r = await client.post(path, content=b"{}", headers={"content-type": ctype})
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == PROBLEM
    assert "UTF-8" in r.json()["detail"]
    assert await count(db) == 0


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json;charset=utf8",
    ],
)
async def test_utf8_charset_is_accepted(client: httpx.AsyncClient, ctype: str) -> None:
    body = orjson.dumps(tx(1, customer_id="São Paulo"))
    r = await client.post("/v1/transactions", content=body, headers={"content-type": ctype})
    assert r.status_code == 200, r.text


# -- labels before their transaction -----------------------------------------------------


async def test_a_label_dated_before_its_transaction_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Both at 2018-04-01T13:00:00Z.
    for i in (1, 2):
        assert (await client.post("/v1/transactions", json=tx(i))).status_code == 200
    labels = [
        {"transaction_id": "tx-1", "fraud": True, "labelled_at": "2018-04-01T13:00:00Z"},
        {"transaction_id": "tx-2", "fraud": True, "labelled_at": "2018-04-01T09:59:59-03:00"},
    ]
    r = await client.post("/v1/labels", json={"labels": labels})
    assert fields(r) == ["labels[1].labelled_at"]
    assert r.json()["indexes"] == [1]
    assert "precedes the transaction's timestamp" in r.json()["errors"][0]["message"]
    assert await count(db, "labels") == 0
    # At the transaction's own instant (another offset) it is accepted.
    labels[1]["labelled_at"] = "2018-04-01T10:00:00-03:00"
    r = await client.post("/v1/labels", json={"labels": labels})
    assert r.status_code == 200, r.text
    assert await count(db, "labels") == 2


async def test_a_defaulted_labelled_at_is_never_before_its_transaction(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A transaction stamped a little ahead of the server's clock (within the
    allowed skew) can be labelled at once; its label is dated at the transaction."""
    ahead = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    r = await client.post("/v1/transactions", json=tx(1, timestamp=ahead.isoformat()))
    assert r.status_code == 200, r.text
    r = await client.post(
        "/v1/labels", json={"labels": [{"transaction_id": "tx-1", "fraud": True}]}
    )
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT labelled_at FROM labels") == ahead


# -- the OpenAPI description lists what each route answers -----------------------------

#: What the bearer-token check itself can answer on a protected route (sankofa.auth).
AUTH = {401, 403, 429}
DOCUMENTED = {
    ("post", "/v1/transactions"): {200, 400, 408, 409, 413, 415, 422, 431, 503, 504} | AUTH,
    ("post", "/v1/transactions/batch"): {200, 400, 408, 409, 413, 415, 422, 431, 503, 504} | AUTH,
    ("post", "/v1/labels"): {200, 400, 408, 413, 415, 422, 431, 503} | AUTH,
    ("get", "/v1/transactions/{transaction_id}"): {200, 404, 422, 431, 503} | AUTH,
}


async def test_each_route_documents_what_it_answers(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    for (method, path), codes in DOCUMENTED.items():
        responses = doc["paths"][path][method]["responses"]
        assert {int(c) for c in responses} == codes, (method, path)
        for code in (429, 503, 504):
            if code in codes:
                assert responses[str(code)]["headers"]["Retry-After"]["required"] is True
    assert "404" not in doc["paths"]["/v1/labels"]["post"]["responses"]


async def test_labels_for_unknown_transactions_are_the_documented_422(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post(
        "/v1/labels", json={"labels": [{"transaction_id": "nope", "fraud": True}]}
    )
    assert fields(r) == ["labels[0].transaction_id"]
    assert await count(db, "labels") == 0


@pytest.fixture
def slow_body_server(settings: Settings, tmp_path: Path) -> Any:
    server = LiveServer(server_env(settings, SANKOFA_BODY_TIMEOUT_S="0.5"), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_body_route_can_answer_the_documented_408(slow_body_server: LiveServer) -> None:
    doc = httpx.get(f"{slow_body_server.url}/openapi.json").json()
    for path in ("/v1/transactions", "/v1/transactions/batch", "/v1/labels"):
        with socket.create_connection(("127.0.0.1", slow_body_server.port), timeout=10) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
                + b'Content-Length: 5000\r\n\r\n{"a":'
            )
            reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), (path, reply[:200])
        assert "408" in doc["paths"][path]["post"]["responses"], path
