"""Shedding at the door by event-loop lag."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from sankofa.queues.priority import Priority
from sankofa.queues.shedding import LoadShedder
from tests_support import tx

THRESHOLDS = {
    Priority.CRITICAL: None,
    Priority.HIGH: 0.08,
    Priority.NORMAL: 0.04,
    Priority.LOW: 0.02,
}


async def test_lower_classes_are_refused_first_and_critical_never() -> None:
    shedder = LoadShedder(thresholds_s=THRESHOLDS)
    await shedder.start()
    try:
        assert not any(shedder.refuses(p) for p in Priority)
        # Block the event loop (the way a saturated worker does) several times.
        for _ in range(6):
            time.sleep(0.06)
            await asyncio.sleep(0.006)
        assert shedder.refuses(Priority.LOW)
        assert not shedder.refuses(Priority.CRITICAL)
        # Once the loop is free again, the smoothed lag falls and everyone is served.
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not shedder.refuses(Priority.LOW):
                break
        assert not shedder.refuses(Priority.LOW)
    finally:
        await shedder.stop()


def test_thresholds_checked() -> None:
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s={Priority.LOW: 1.0})
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s={**THRESHOLDS, Priority.LOW: -1.0})


async def test_shed_requests_get_503_with_retry_after_before_parsing(
    client: httpx.AsyncClient, services: object
) -> None:
    shedder = services.shedder  # type: ignore[attr-defined]
    await shedder.stop()  # hold the reading still for the test
    shedder.lag_s = 1.0  # as if the loop were a second late
    r = await client.post("/v1/transactions", json=tx(1), headers={"x-priority": "low"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["type"].endswith("overloaded")
    # Not parsed: even a malformed body is shed, not 400.
    r = await client.post(
        "/v1/transactions", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 503
    # Critical goes through.
    r = await client.post("/v1/transactions", json=tx(2), headers={"x-priority": "critical"})
    assert r.status_code == 200
    text = (await client.get("/metrics")).text
    assert 'sankofa_shed_total{priority="low"} 1.0' in text
