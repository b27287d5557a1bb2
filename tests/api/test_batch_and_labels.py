"""POST /v1/transactions/batch and POST /v1/labels."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from sankofa.store.repository import decode_features
from tests_support import tx

PROBLEM = "application/problem+json"


def batch(n: int, start: int = 0, **over: Any) -> dict[str, Any]:
    return {
        "transactions": [tx(start + i, customer_id=f"c{(start + i) % 7}", **over) for i in range(n)]
    }


async def count(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM transactions")
    return n


async def test_batch_results_come_back_in_order(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = batch(50)
    body["transactions"].reverse()
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["count"] == 50
    assert [d["transaction_id"] for d in out["results"]] == [
        t["transaction_id"] for t in body["transactions"]
    ]
    assert await count(db) == 50


async def test_batch_of_1000_is_accepted(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    r = await client.post("/v1/transactions/batch", json=batch(1000))
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1000
    assert await count(db) == 1000


async def test_batch_limits(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """C19: 1,001 items, an empty batch, one bad item: refused, nothing stored."""
    r = await client.post("/v1/transactions/batch", json=batch(1001))
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    r = await client.post("/v1/transactions/batch", json={"transactions": []})
    assert r.status_code == 422
    body = batch(10)
    body["transactions"][7]["amount"] = "-1"
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 422
    assert r.json()["indexes"] == [7]
    assert r.json()["errors"][0]["field"] == "transactions[7].amount"
    r = await client.post("/v1/transactions/batch", json={"transactions": "nope"})
    assert r.status_code == 422
    r = await client.post("/v1/transactions/batch", json={"transactions": [tx(1)], "extra": 1})
    assert r.status_code == 422
    assert await count(db) == 0


async def test_batch_with_a_repeated_id_is_refused_with_both_indexes(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """C20: documented rule: refused (422), the repeat's index named, nothing stored."""
    body = batch(5)
    body["transactions"][3]["transaction_id"] = body["transactions"][1]["transaction_id"]
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 422
    assert r.json()["indexes"] == [3]
    assert "item 1" in r.json()["errors"][0]["message"]
    assert await count(db) == 0


async def test_batch_conflict_refuses_the_whole_request(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post("/v1/transactions", json=tx(2, customer_id="c2"))
    body = batch(5)
    body["transactions"][2]["amount"] = "1.00"  # tx-2 again, other content
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 409
    assert r.json()["indexes"] == [2]
    assert await count(db) == 1


async def test_batch_with_replays_mixed_in(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    first = await client.post("/v1/transactions/batch", json=batch(3))
    r = await client.post("/v1/transactions/batch", json=batch(6))
    assert r.status_code == 200
    res = r.json()["results"]
    assert [d["replayed"] for d in res] == [True, True, True, False, False, False]
    assert [d["risk_score"] for d in res[:3]] == [d["risk_score"] for d in first.json()["results"]]
    assert await count(db) == 6


async def test_same_id_twice_at_the_same_moment(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """C11: one stored row, counted once, both answers carry the same decision."""
    results = await asyncio.gather(*(client.post("/v1/transactions", json=tx(9)) for _ in range(8)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    decisions = {(r.json()["decision"], r.json()["risk_score"]) for r in results}
    assert len(decisions) == 1
    assert sum(not r.json()["replayed"] for r in results) == 1
    assert await count(db) == 1
    # Counted once: the next transaction of that customer sees exactly one before it.
    r = await client.post(
        "/v1/transactions/batch",
        json={"transactions": [tx(10, timestamp="2018-04-01T10:00:01-03:00")]},
    )
    assert r.status_code == 200
    features = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-10'")
    )
    assert features[3] == 2.0  # CUSTOMER_ID_NB_TX_1DAY_WINDOW: tx-9 once, plus itself


async def test_labels_are_stored_and_validated(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post("/v1/transactions/batch", json=batch(3))
    r = await client.post(
        "/v1/labels",
        json={
            "labels": [
                {"transaction_id": "tx-0", "fraud": True, "labelled_at": "2018-04-08T10:00:00Z"},
                {"transaction_id": "tx-1", "fraud": False},
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 2, "applied": 2}
    got = await client.get("/v1/transactions/tx-0")
    assert got.json()["label"]["fraud"] is True
    # An older label does not overwrite a newer one.
    r = await client.post(
        "/v1/labels",
        json={
            "labels": [
                {"transaction_id": "tx-0", "fraud": False, "labelled_at": "2018-04-02T00:00:00Z"}
            ]
        },
    )
    assert r.status_code == 200 and r.json()["applied"] == 0
    assert (await db.fetchval("SELECT fraud FROM labels WHERE transaction_id='tx-0'")) is True


@pytest.mark.parametrize(
    "body, index",
    [
        (
            {
                "labels": [
                    {"transaction_id": "tx-0", "fraud": True},
                    {"transaction_id": "nope", "fraud": True},
                ]
            },
            1,
        ),
        ({"labels": [{"transaction_id": "tx-0", "fraud": "yes"}]}, 0),
        (
            {
                "labels": [
                    {"transaction_id": "tx-0", "fraud": True, "labelled_at": "2018-04-01T10:00:00"}
                ]
            },
            0,
        ),
        (
            {
                "labels": [
                    {"transaction_id": "tx-0", "fraud": True},
                    {"transaction_id": "tx-0", "fraud": False},
                ]
            },
            1,
        ),
        ({"labels": [{"transaction_id": "tx-0", "fraud": True, "x": 1}]}, 0),
    ],
)
async def test_bad_labels_are_422_and_store_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: Any, index: int
) -> None:
    await client.post("/v1/transactions/batch", json=batch(2))
    r = await client.post("/v1/labels", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["indexes"] == [index]
    assert await db.fetchval("SELECT count(*) FROM labels") == 0


async def test_empty_labels_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/labels", json={"labels": []})).status_code == 422
    assert (await client.post("/v1/labels", json={})).status_code == 422


async def test_labels_feed_terminal_risk(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """A fraud label on a terminal's transaction shows in later terminal-risk features."""
    await client.post(
        "/v1/transactions", json=tx(1, terminal_id="T", timestamp="2018-04-01T10:00:00Z")
    )
    await client.post(
        "/v1/transactions",
        json=tx(2, terminal_id="T", customer_id="other", timestamp="2018-04-01T11:00:00Z"),
    )
    await client.post(
        "/v1/labels",
        json={
            "labels": [
                {"transaction_id": "tx-1", "fraud": True},
                {"transaction_id": "tx-2", "fraud": False},
            ]
        },
    )
    # 8 days later: both are in the 1-day window delayed by 7 days: (t-8d, t-7d].
    r = await client.post(
        "/v1/transactions",
        json=tx(3, terminal_id="T", customer_id="third", timestamp="2018-04-08T12:00:00Z"),
    )
    assert r.status_code == 200
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-3'")
    )
    assert (
        f[9] == 2.0 and f[10] == 0.5
    )  # TERMINAL_ID_NB_TX_1DAY_WINDOW, TERMINAL_ID_RISK_1DAY_WINDOW
    # A label changed to not-fraud leaves the fraud set.
    await client.post("/v1/labels", json={"labels": [{"transaction_id": "tx-1", "fraud": False}]})
    await client.post(
        "/v1/transactions",
        json=tx(4, terminal_id="T", customer_id="fourth", timestamp="2018-04-08T12:00:01Z"),
    )
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-4'")
    )
    assert f[9] == 2.0 and f[10] == 0.0
