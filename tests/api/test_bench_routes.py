"""The load tests' baselines: mounted only on request, and doing what they claim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import _with_state
from sankofa.api.app import create_app
from sankofa.store.repository import decode_features
from tests_support import tx


@pytest.fixture
async def bench_client(settings_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_factory(benchmark_endpoints=True))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
            yield c


async def test_not_mounted_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.post("/bench/bare", json=tx())).status_code == 404
    assert (await client.post("/bench/naive", json=tx())).status_code == 404


async def test_bare_parses_and_answers_a_fixed_decision(
    bench_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await bench_client.post("/bench/bare", json=tx())
    assert r.status_code == 200 and r.json()["decision"] == "approve"
    assert (
        await bench_client.post(
            "/bench/bare", content=b"{", headers={"content-type": "application/json"}
        )
    ).status_code == 400
    assert await db.fetchval("SELECT count(*) FROM transactions") == 0


async def test_naive_scores_and_stores_like_the_real_path(
    bench_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    naive = await bench_client.post("/bench/naive", json=tx(1, timestamp="2018-04-01T10:00:00Z"))
    real = await bench_client.post("/v1/transactions", json=tx(2, timestamp="2018-04-01T10:00:01Z"))
    assert naive.status_code == 200 and real.status_code == 200
    rows = await db.fetch(
        "SELECT transaction_id, features FROM transactions ORDER BY transaction_id"
    )
    f1, f2 = decode_features(rows[0]["features"]), decode_features(rows[1]["features"])
    assert f1[3] == 1 and f2[3] == 2  # the real path saw the naive path's transaction
    assert (
        await bench_client.post("/bench/naive", json=tx(1, timestamp="2018-04-01T10:00:00Z"))
    ).status_code == 409
