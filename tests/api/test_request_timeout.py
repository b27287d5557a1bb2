"""X-Request-Timeout-Ms: a budget below the floor is bad input (422, nothing stored),
since it could only ever end in a 504; at the floor and above it is honoured."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from sankofa.api.headers import MIN_TIMEOUT_MS
from tests_support import tx

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("value", ["1", "10", str(MIN_TIMEOUT_MS - 1)])
async def test_a_budget_below_the_floor_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(), headers={"x-request-timeout-ms": value})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["errors"][0]["field"] == "header X-Request-Timeout-Ms"
    assert f"at least {MIN_TIMEOUT_MS}" in r.json()["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM transactions") == 0


async def test_a_budget_at_the_floor_is_honoured(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/transactions",
        json=tx(),
        headers={"x-request-timeout-ms": str(MIN_TIMEOUT_MS), "x-priority": "critical"},
    )
    # Scored in time on a quiet machine; on a starved one a 504 (not scored in
    # time) or a 503 "outcome unknown" (scored, but the commit was not confirmed
    # within the budget) is the honest answer. Never a 422: the floor is allowed.
    assert r.status_code in (200, 503, 504), r.text
    if r.status_code == 503:
        assert r.json()["type"] == "urn:sankofa:problem:outcome-unknown", r.text
