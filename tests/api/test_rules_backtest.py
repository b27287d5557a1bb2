"""POST /v1/rules/backtest on transactions stored through the API and labelled later."""

from __future__ import annotations

import httpx
import pytest

from tests_support import tx

PROBLEM = "application/problem+json"

#: (id, timestamp, amount, type, customer, fraud label or None)
STORED = [
    (1, "2023-03-01T10:00:00-03:00", "1500.00", "pix", "a", True),
    (2, "2023-03-01T11:00:00-03:00", "1200.00", "pix", "a", False),
    (3, "2023-03-01T12:00:00-03:00", "2000.00", "pix", "a", None),
    (4, "2023-03-01T13:00:00-03:00", "50.00", "pix", "b", True),
    (5, "2023-03-01T14:00:00-03:00", "5000.00", "card", "b", True),
    (6, "2023-03-02T10:00:00-03:00", "3000.00", "pix", "c", False),
    (7, "2023-03-03T10:00:00-03:00", "9000.00", "pix", "c", True),  # outside the range
]
RANGE = {"from": "2023-03-01T00:00:00-03:00", "to": "2023-03-03T10:00:00-03:00"}


@pytest.fixture
async def history(client: httpx.AsyncClient) -> None:
    body = {
        "transactions": [
            tx(i, timestamp=ts, amount=amount, type=kind, customer_id=cust)
            for i, ts, amount, kind, cust, _ in STORED
        ]
    }
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    labels = [
        {"transaction_id": f"tx-{i}", "fraud": fraud, "labelled_at": "2023-04-01T00:00:00Z"}
        for i, *_, fraud in STORED
        if fraud is not None
    ]
    assert (await client.post("/v1/labels", json={"labels": labels})).status_code == 200


async def backtest(client: httpx.AsyncClient, expression: str, **over: object) -> dict:
    r = await client.post("/v1/rules/backtest", json={"expression": expression, **RANGE, **over})
    assert r.status_code == 200, r.text
    out: dict = r.json()
    return out


async def test_counts_hits_by_label(client: httpx.AsyncClient, history: None) -> None:
    got = await backtest(client, 'type == "pix" and amount > 1000')
    # In range: 1-6. Hits: 1 (fraud), 2 (legit), 3 (unlabelled), 6 (legit).
    assert got["transactions"] == 6 and got["truncated"] is False
    assert got["hits"] == 4
    assert got["frauds_caught"] == 1
    assert got["false_positives"] == 2
    assert got["unlabelled_hits"] == 1
    assert got["labelled"] == {"frauds": 3, "legitimate": 2}
    assert got["frauds_missed"] == 2
    assert got["precision"] == pytest.approx(1 / 3) and got["recall"] == pytest.approx(1 / 3)
    assert sorted(got["sample_hits"]) == ["tx-1", "tx-2", "tx-3", "tx-6"]


async def test_reads_the_features_stored_with_each_decision(
    client: httpx.AsyncClient, history: None
) -> None:
    # Customer a's third transaction that day is its third in 24 hours.
    got = await backtest(client, "customer_tx_count_1d >= 3")
    assert got["sample_hits"] == ["tx-3"]
    got = await backtest(client, "not is_weekend and local_hour >= 13")
    assert sorted(got["sample_hits"]) == ["tx-4", "tx-5"]


async def test_range_is_from_included_to_excluded_and_bounded(
    client: httpx.AsyncClient, history: None
) -> None:
    got = await backtest(
        client,
        "amount > 0",
        **{"from": "2023-03-01T13:00:00-03:00", "to": "2023-03-02T10:00:00-03:00"},
    )
    assert sorted(got["sample_hits"]) == ["tx-4", "tx-5"]
    got = await backtest(client, "amount > 0", max_rows=4)
    assert got["transactions"] == 4 and got["truncated"] is True
    got = await backtest(client, "amount > 0", max_rows=6)
    assert got["transactions"] == 6 and got["truncated"] is False
    empty = await backtest(
        client, "amount > 0", **{"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z"}
    )
    assert empty["transactions"] == 0 and empty["precision"] is None and empty["recall"] is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"expression": "amout > 1", **RANGE}, "expression"),
        ({"expression": "amount > 1"}, "from"),
        ({"expression": "amount > 1", "from": RANGE["to"], "to": RANGE["from"]}, "to"),
        ({"expression": "amount > 1", **RANGE, "max_rows": 0}, "max_rows"),
        ({"expression": "amount > 1", **RANGE, "rule": 1}, "rule"),
    ],
)
async def test_bad_backtests_are_422(client: httpx.AsyncClient, body: dict, field: str) -> None:
    r = await client.post("/v1/rules/backtest", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
