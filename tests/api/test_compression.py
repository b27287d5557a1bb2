"""gzip request bodies and responses (issue 5, item 6), over HTTP with httpx
against the real app (in process, and one served by uvicorn on a socket).

- gzipped bodies are accepted on the batch, single and labels routes;
- a small gzip that inflates past the body limit is a 413 problem, found while
  inflating: the memory it costs stays near the limit, not the bomb's size;
- corrupt or truncated gzip is a 400; another Content-Encoding a 415 that says
  ``Accept-Encoding: gzip``;
- responses are gzipped for a client that accepts gzip, above a size only.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from conftest import LiveServer
from sankofa.api.compression import accepts_gzip
from sankofa.settings import Settings
from tests_support import tx

LIMIT = 256 * 1024
JSON = {"Content-Type": "application/json"}
GZ = {**JSON, "Content-Encoding": "gzip"}
PLAIN = {"Accept-Encoding": "identity"}


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(max_body_bytes=LIMIT)
    return s


def batch(n: int, start: int = 0) -> dict[str, Any]:
    return {"transactions": [tx(start + i, customer_id=f"c-{i % 7}") for i in range(n)]}


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 MiB of spaces (valid JSON whitespace) in about 64 KB of gzip."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1024 * 1024)
    parts = [c.compress(b"{" + b" " * 1023)]
    parts += [c.compress(block) for _ in range(64)]
    parts.append(c.flush())
    return b"".join(parts)


def assert_problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == f"urn:sankofa:problem:{slug}"


async def test_gzipped_batch_is_scored(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(batch(50))
    r = await client.post(
        "/v1/transactions/batch", content=gzip.compress(body), headers={**GZ, **PLAIN}
    )
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 50
    assert [d["transaction_id"] for d in r.json()["results"]] == [f"tx-{i}" for i in range(50)]


async def test_gzipped_single_and_labels_are_accepted(client: httpx.AsyncClient) -> None:
    one = await client.post(
        "/v1/transactions",
        content=gzip.compress(orjson.dumps(tx(1))),
        headers={**JSON, "Content-Encoding": "x-gzip"},
    )
    assert one.status_code == 200, one.text
    labels = {"labels": [{"transaction_id": "tx-1", "fraud": True}]}
    r = await client.post("/v1/labels", content=gzip.compress(orjson.dumps(labels)), headers=GZ)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "applied": 1}


async def test_multi_member_gzip_is_one_body(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(tx(1))
    two = gzip.compress(body[:20]) + gzip.compress(body[20:])
    r = await client.post("/v1/transactions", content=two, headers=GZ)
    assert r.status_code == 200, r.text


async def test_a_gzip_bomb_is_413_without_inflating_it(
    client: httpx.AsyncClient, bomb: bytes
) -> None:
    assert len(bomb) < LIMIT  # it passes the wire limit; only inflating shows it
    tracemalloc.start()
    try:
        r = await client.post("/v1/transactions/batch", content=bomb, headers=GZ)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_problem(r, 413, "body-too-large")
    assert "inflates past" in r.json()["detail"]
    # The bomb is 64 MiB inflated; what the request held stays near the limit.
    assert peak < 8 * LIMIT + 2 * len(bomb), peak


async def test_just_under_the_limit_inflated_is_accepted(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(tx(1))
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    r = await client.post("/v1/transactions", content=gzip.compress(padded), headers=GZ)
    assert r.status_code == 200, r.text
    over = await client.post("/v1/transactions", content=gzip.compress(b" " + padded), headers=GZ)
    assert_problem(over, 413, "body-too-large")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not gzip at all", id="not-gzip"),
        pytest.param(gzip.compress(orjson.dumps(tx(1)))[:-9], id="truncated"),
        pytest.param(
            gzip.compress(orjson.dumps(tx(1)))[:-8] + b"\0\0\0\0" + b"\x99\0\0\0", id="bad-crc"
        ),
        pytest.param(gzip.compress(orjson.dumps(tx(1))) + b"garbage", id="trailing-garbage"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_corrupt_gzip_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    r = await client.post("/v1/transactions", content=content, headers=GZ)
    assert_problem(r, 400, "malformed-body")


@pytest.mark.parametrize("coding", ["br", "deflate", "gzip, br", "compress", "zstd"])
async def test_other_content_encodings_are_415(client: httpx.AsyncClient, coding: str) -> None:
    r = await client.post(
        "/v1/transactions/batch",
        content=orjson.dumps(batch(1)),
        headers={**JSON, "Content-Encoding": coding},
    )
    assert_problem(r, 415, "unsupported-content-encoding")
    assert r.headers["accept-encoding"] == "gzip"


async def test_responses_are_gzipped_when_asked_and_large(client: httpx.AsyncClient) -> None:
    body = batch(20)
    asked = await client.post(
        "/v1/transactions/batch", json=body, headers={"Accept-Encoding": "gzip"}
    )
    assert asked.status_code == 200, asked.text
    assert asked.headers["content-encoding"] == "gzip"
    assert asked.headers["vary"] == "Accept-Encoding"
    assert int(asked.headers["content-length"]) < len(asked.content) / 3
    plain = await client.post("/v1/transactions/batch", json=body, headers=PLAIN)
    assert "content-encoding" not in plain.headers
    # A replay of the same batch: the same decisions, read without gzip.
    assert [(d["transaction_id"], d["decision"]) for d in plain.json()["results"]] == [
        (d["transaction_id"], d["decision"]) for d in asked.json()["results"]
    ]
    refused = await client.post(
        "/v1/transactions/batch", json=body, headers={"Accept-Encoding": "gzip;q=0, br"}
    )
    assert "content-encoding" not in refused.headers
    small = await client.post("/v1/transactions", json=tx(99), headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200 and "content-encoding" not in small.headers
    problem = await client.post(
        "/v1/transactions/batch",
        json={"transactions": [tx(i, amount="-1") for i in range(40)]},
        headers={"Accept-Encoding": "gzip"},
    )
    assert problem.status_code == 422
    assert problem.headers["content-encoding"] == "gzip"
    assert len(problem.json()["errors"]) == 40


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        (b"gzip", True),
        (b"deflate, gzip;q=0.5", True),
        (b"GZIP", True),
        (b"x-gzip", True),
        (b"*", True),
        (b"gzip;q=0", False),
        (b"gzip;q=0.0, *", False),
        (b"*;q=0", False),
        (b"br, deflate", False),
        (b"identity", False),
        (b"gzip;q=nonsense", False),
        (b"", False),
    ],
)
def test_accept_encoding_is_read_with_its_q_values(header: bytes, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


@pytest.fixture
def served(live_server: LiveServer) -> Iterator[str]:
    yield live_server.url


def test_over_a_socket_a_streamed_gzip_body_and_a_bomb(served: str, bomb: bytes) -> None:
    packed = gzip.compress(orjson.dumps(batch(30, start=500)))

    def chunks(data: bytes) -> Iterator[bytes]:  # no Content-Length: chunked
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    with httpx.Client(base_url=served, timeout=30) as c:
        r = c.post("/v1/transactions/batch", content=chunks(packed), headers=GZ)
        assert r.status_code == 200, r.text
        assert r.headers["content-encoding"] == "gzip"  # httpx asks for it by default
        assert r.json()["count"] == 30
        big = c.post("/v1/transactions/batch", content=chunks(bomb), headers=GZ)
        assert_problem(big, 413, "body-too-large")
