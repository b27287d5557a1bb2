"""POST /v1/transactions and friends, through the real app, PostgreSQL and Redis."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from sankofa.engine.feature_names import N_SERVED_FEATURES
from tests_support import tx

PROBLEM = "application/problem+json"


async def count(db: asyncpg.Connection, table: str = "transactions") -> int:
    n: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return n


async def test_scores_one_transaction_and_stores_it(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/transactions", json=tx())
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["transaction_id"] == "tx-1"
    assert d["decision"] in ("approve", "review", "decline")
    assert 0.0 <= d["risk_score"] <= 1.0
    assert d["risk_level"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
    assert d["reasons"] and all(isinstance(c, str) for c in d["reasons"])
    assert d["priority"] == "normal"
    assert d["replayed"] is False
    assert d["batch_size"] >= 1
    assert d["model_version"]
    row = await db.fetchrow(
        "SELECT amount, customer_ref, decision, risk_score, features, priority"
        " FROM transactions WHERE transaction_id = 'tx-1'"
    )
    assert row["amount"] == Decimal("48.70")
    assert row["customer_ref"] != "cust-1"  # pseudonymised
    assert row["decision"] == d["decision"] and row["risk_score"] == d["risk_score"]
    assert len(row["features"]) == N_SERVED_FEATURES * 8  # the served vector
    assert row["priority"] == "normal"


async def test_get_returns_the_stored_transaction(client: httpx.AsyncClient) -> None:
    await client.post("/v1/transactions", json=tx(amount=0.1))
    r = await client.get("/v1/transactions/tx-1")
    assert r.status_code == 200
    body = r.json()
    assert body["transaction"]["amount"] == "0.10"
    assert body["transaction"]["timestamp"] == "2018-04-01T10:00:00-03:00"
    assert "cust-1" not in r.text
    assert body["decision"]["decision"] in ("approve", "review", "decline")
    assert body["label"] is None
    missing = await client.get("/v1/transactions/nope")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "value, stored",
    [
        (0.1, "0.10"),
        ("0.10", "0.10"),
        (9999999999.99, "9999999999.99"),
        ("48.70", "48.70"),
        (1e3, "1000.00"),
        (5, "5.00"),
    ],
)
async def test_amounts_are_stored_exactly(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: Any, stored: str
) -> None:
    """C4: no float artefacts between the request, the database and the response."""
    r = await client.post("/v1/transactions", json=tx(amount=value))
    assert r.status_code == 200, r.text
    assert (
        str(await db.fetchval("SELECT amount FROM transactions WHERE transaction_id='tx-1'"))
        == stored
    )
    assert (await client.get("/v1/transactions/tx-1")).json()["transaction"]["amount"] == stored


BAD_AMOUNTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e3",
    -5,
    0,
    "12,50",
    "0.001",
    True,
    None,
    "",
    " 12",
    "+5",
    [1],
    {"v": 1},
    1e15,
    "1000000000000.01",
    0.001,
]


@pytest.mark.parametrize("value", BAD_AMOUNTS, ids=repr)
async def test_bad_amounts_are_422_naming_the_field(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: Any
) -> None:
    """C3."""
    r = await client.post("/v1/transactions", json=tx(amount=value))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["errors"][0]["field"] == "amount"
    assert body["type"].endswith("invalid-field")
    assert await count(db) == 0


@pytest.mark.parametrize("raw", [b'{"amount": 1e999', b"1e999"])
async def test_infinite_json_number_amount(
    client: httpx.AsyncClient, db: asyncpg.Connection, raw: bytes
) -> None:
    body = (
        b'{"transaction_id":"tx-1","timestamp":"2018-04-01T10:00:00Z","customer_id":"c","terminal_id":"t","amount":'
        + raw.split(b":")[-1].rstrip(b"}").strip()
        + b"}"
    )
    r = await client.post(
        "/v1/transactions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "amount"
    assert await count(db) == 0


async def test_largest_amount_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/transactions", json=tx(amount="1000000000000"))
    assert r.status_code == 200, r.text
    assert str(await db.fetchval("SELECT amount FROM transactions")) == "1000000000000.00"


@pytest.mark.parametrize(
    "field, value",
    [
        ("transaction_id", ""),
        ("transaction_id", "a" * 65),
        ("transaction_id", "has space"),
        ("transaction_id", "semi;colon"),
        ("transaction_id", 12),
        ("transaction_id", None),
        ("timestamp", "2018-04-01T10:00:00"),
        ("timestamp", "2018-04-01 10:00:00"),
        ("timestamp", "2018-04-01T23:59:60Z"),
        ("timestamp", ""),
        ("timestamp", "yesterday"),
        ("timestamp", "2018-02-30T10:00:00Z"),
        ("timestamp", "2018-04-01T10:00:00+24:00"),
        ("timestamp", 1522540800),
        ("timestamp", None),
        ("currency", "brl"),
        ("currency", "XXX"),
        ("currency", "BR"),
        ("currency", 986),
        ("customer_id", ""),
        ("customer_id", "x" * 129),
        ("customer_id", "line\nbreak"),
        ("customer_id", 596),
        ("customer_id", None),
        ("terminal_id", ""),
        ("terminal_id", None),
        ("terminal_id", ["t"]),
        ("type", "crypto"),
        ("type", "PIX"),
        ("channel", "Mobile App"),
        ("channel", "x" * 33),
        ("device_id", ""),
        ("device_id", "\x00"),
        ("ip_address", "999.1.1.1"),
        ("ip_address", "localhost"),
        ("metadata", [1, 2]),
        ("metadata", {"nested": {"a": 1}}),
        ("metadata", {"big": "x" * 600}),
        ("metadata", {f"k{i}": i for i in range(40)}),
        ("unknown_field", 1),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_every_field_rule_is_enforced(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str, value: Any
) -> None:
    r = await client.post("/v1/transactions", json=tx(**{field: value}))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert await count(db) == 0


async def test_metadata_total_size_limit(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    r = await client.post(
        "/v1/transactions", json=tx(metadata={f"k{i}": "v" * 100 for i in range(30)})
    )
    assert r.status_code == 422
    assert await count(db) == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("currency", "USD"),
        ("type", "pix"),
        ("type", "boleto"),
        ("channel", "mobile_app"),
        ("device_id", "dev-9"),
        ("ip_address", "2001:db8::1"),
        ("metadata", {"mcc": "5411", "n": 3, "ok": True, "none": None}),
        ("timestamp", "2018-04-01T10:00:00Z"),
        ("timestamp", "2018-04-01T10:00:00.123456+14:00"),
    ],
)
async def test_valid_optional_fields_are_accepted(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    r = await client.post("/v1/transactions", json=tx(**{field: value}))
    assert r.status_code == 200, r.text


async def test_idempotent_replay_returns_the_stored_decision(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    first = (await client.post("/v1/transactions", json=tx())).json()
    again = await client.post(
        "/v1/transactions", json=tx(amount="48.7")
    )  # same value, other spelling
    assert again.status_code == 200
    second = again.json()
    assert second["replayed"] is True
    for k in ("decision", "risk_score", "risk_level", "reasons", "model_version"):
        assert second[k] == first[k]
    assert await count(db) == 1


async def test_same_id_other_content_is_409_and_first_kept(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """C12."""
    await client.post("/v1/transactions", json=tx())
    r = await client.post("/v1/transactions", json=tx(amount="99.99"))
    assert r.status_code == 409
    assert r.headers["content-type"] == PROBLEM
    assert (
        str(await db.fetchval("SELECT amount FROM transactions WHERE transaction_id='tx-1'"))
        == "48.70"
    )


async def test_priority_headers(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """C18: X-Priority names; RFC 9218 urgencies; X-Priority wins when both are given."""
    cases = [
        ({"x-priority": "critical"}, "critical"),
        ({"x-priority": "LOW"}, "low"),
        ({"priority": "u=0"}, "critical"),
        ({"priority": "u=1, i"}, "critical"),
        ({"priority": "u=2"}, "high"),
        ({"priority": "u=4"}, "normal"),
        ({"priority": "u=7"}, "low"),
        ({"priority": "u=9"}, "normal"),  # out of range: ignored, default applies
        ({"priority": "garbage"}, "normal"),
        ({"x-priority": "high", "priority": "u=7"}, "high"),
    ]
    for i, (headers, expected) in enumerate(cases):
        r = await client.post("/v1/transactions", json=tx(i), headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["priority"] == expected, headers
        stored = await db.fetchval(
            "SELECT priority FROM transactions WHERE transaction_id=$1", f"tx-{i}"
        )
        assert stored == expected


@pytest.mark.parametrize("value", ["urgent", "", "critical\x01", "9"])
async def test_unknown_x_priority_is_422_listing_allowed_values(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(), headers={"x-priority": value})
    assert r.status_code == 422
    assert "critical, high, normal, low" in r.json()["detail"]
    assert value not in r.headers.values() or value == ""
    assert await count(db) == 0


async def test_request_id_is_echoed_only_when_well_formed(client: httpx.AsyncClient) -> None:
    """C17: a request id with control characters is never reflected."""
    ok = await client.get("/health/live", headers={"x-request-id": "abc-123"})
    assert ok.headers["x-request-id"] == "abc-123"
    bad = await client.get("/health/live", headers={"x-request-id": "abc\x01def"})
    assert bad.headers["x-request-id"] != "abc\x01def"
    assert "\x01" not in bad.headers["x-request-id"]


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5"])
async def test_bad_request_timeout_header(client: httpx.AsyncClient, value: str) -> None:
    r = await client.post("/v1/transactions", json=tx(), headers={"x-request-timeout-ms": value})
    assert r.status_code == 422


async def test_media_type_and_malformed_json(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """C8."""
    r = await client.post(
        "/v1/transactions", content=b'{"a":1}', headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    r = await client.post(
        "/v1/transactions", content=b"not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    r = await client.post(
        "/v1/transactions", content=b"", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.post(
        "/v1/transactions", content=b"[1,2]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert await count(db) == 0


async def test_deeply_nested_json_is_400(client: httpx.AsyncClient) -> None:
    """C6: 20,000 levels (about 40 KB)."""
    body = b"[" * 20_000 + b"]" * 20_000
    r = await client.post(
        "/v1/transactions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert (await client.get("/health/live")).status_code == 200


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"transaction_id": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    r = await client.post(
        "/v1/transactions", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = await client.delete("/v1/transactions")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM


async def test_health_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "database": True,
            "dispatcher": True,
            "accepting": True,
            "redis": True,
            "features_complete": True,
        },
        "replica": "not_configured",
    }
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/transactions/batch" in spec["paths"]
    assert "TransactionIn" in spec["components"]["schemas"]


async def test_same_id_in_one_batch_after_redis_forgot_it_is_judged_against_the_stored_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis_url: str, redis_prefix: str
) -> None:
    """C12 under concurrency, when Redis no longer knows a stored id (its history
    trimmed, or Redis restarted): the batch's COPY meets the stored row, and every
    request must then be judged against that row, not against the first request of
    the batch. Found by a new user: 200 `replayed` for other content, 409 for the
    stored content."""
    import asyncio

    import redis.asyncio as redis_async

    assert (await client.post("/v1/transactions", json=tx())).status_code == 200
    r = redis_async.Redis.from_url(redis_url)
    try:  # forget the histories, keep the "features complete" marker
        keys = [k async for k in r.scan_iter(match=f"{redis_prefix}:*") if b":built" not in k]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
    other, same = tx(amount="99.99"), tx()
    answers = await asyncio.gather(
        *(client.post("/v1/transactions", json=body) for body in (other, same, other, same))
    )
    assert [a.status_code for a in answers] == [409, 200, 409, 200], [a.text for a in answers]
    assert all(a.json()["replayed"] is True for a in answers[1::2])
    assert await count(db) == 1
    assert (
        str(await db.fetchval("SELECT amount FROM transactions WHERE transaction_id='tx-1'"))
        == "48.70"
    )
