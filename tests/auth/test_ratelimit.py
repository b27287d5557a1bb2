"""Per-client rate limits: a token bucket, 429 with Retry-After."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from auth.conftest import bearer, role_token
from conftest import _with_state
from sankofa.api.app import create_app
from sankofa.auth.ratelimit import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    b = TokenBuckets(rate_per_s=2.0, burst=3, clock=clock)
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(0.5)
    assert b.take("b") == 0.0  # another client has its own bucket
    clock.t += 0.5
    assert b.take("a") == 0.0
    assert b.take("a") > 0


def test_a_clients_own_rate_overrides_and_zero_means_no_limit() -> None:
    clock = FakeClock()
    b = TokenBuckets(rate_per_s=0.0, burst=1, clock=clock)
    assert all(b.take("a") == 0.0 for _ in range(100))
    assert b.take("c", rate_per_s=1.0) == 0.0
    assert b.take("c", rate_per_s=1.0) == pytest.approx(1.0)


def test_buckets_are_bounded() -> None:
    b = TokenBuckets(rate_per_s=1.0, burst=1, max_buckets=10, clock=FakeClock())
    for i in range(100):
        b.take(str(i))
    assert len(b._buckets) == 10


async def test_over_the_rate_is_429_with_retry_after(auth_settings: Any) -> None:
    app = create_app(auth_settings(rate_limit_per_s=0.5, rate_limit_burst=2))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            one = bearer(role_token("analyst", sub="client-one"))
            other = bearer(role_token("analyst", sub="client-two"))
            got = [(await c.get("/v1/transactions/x-1", headers=one)) for _ in range(3)]
            assert [r.status_code for r in got] == [404, 404, 429]
            assert got[2].headers["retry-after"] == "2"
            assert got[2].headers["content-type"] == "application/problem+json"
            # Another client is not held back by the first one's rate.
            assert (await c.get("/v1/transactions/x-1", headers=other)).status_code == 404
            # Health stays open whatever the rate.
            assert (await c.get("/health/live")).status_code == 200


async def test_a_registered_clients_own_rate_applies(auth_settings: Any, register: Any) -> None:
    app = create_app(auth_settings(rate_limit_per_s=1000.0, rate_limit_burst=1))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            client, secret = await register("analyst", rate_per_s=0.1)
            token = (
                await c.post(
                    "/v1/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client.client_id, secret),
                )
            ).json()["access_token"]
            first = await c.get("/v1/transactions/x-1", headers=bearer(token))
            second = await c.get("/v1/transactions/x-1", headers=bearer(token))
    assert (first.status_code, second.status_code) == (404, 429)
    assert second.headers["retry-after"] == "10"
