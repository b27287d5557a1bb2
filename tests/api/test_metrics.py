"""/metrics: Prometheus exposition of requests, queues, batches and pools."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import LiveServer
from tests_support import tx


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} {labels} not in metrics"
    return total


async def test_requests_batches_and_round_trips_are_counted(client: httpx.AsyncClient) -> None:
    for i in range(5):
        assert (
            await client.post(
                "/v1/transactions",
                json=tx(i, customer_id=f"c{i}"),
                headers={"x-priority": "critical"},
            )
        ).status_code == 200
    await client.post(
        "/v1/transactions/batch",
        json={"transactions": [tx(100 + i, customer_id=f"b{i}") for i in range(10)]},
    )
    await client.post(
        "/v1/transactions", json=tx(1, customer_id="c1"), headers={"x-priority": "critical"}
    )  # a replay
    await client.post("/v1/transactions", json={"bad": 1})
    r = await client.get("/metrics")
    assert r.status_code == 200
    text = r.text
    assert (
        value(
            text,
            "sankofa_http_requests_total",
            route="/v1/transactions",
            status="200",
            priority="critical",
        )
        == 6
    )
    assert (
        value(
            text,
            "sankofa_http_requests_total",
            route="/v1/transactions/batch",
            status="200",
            priority="normal",
        )
        == 1
    )
    assert value(text, "sankofa_http_requests_total", route="/v1/transactions", status="422") == 1
    assert (
        value(
            text,
            "sankofa_http_request_duration_seconds_count",
            route="/v1/transactions",
            priority="critical",
        )
        == 6
    )
    batches = value(text, "sankofa_batches_total")
    assert batches >= 2
    # Exactly one Redis round trip per batch; one database transaction per batch
    # with something new to store (the replay's batch wrote nothing).
    assert value(text, "sankofa_redis_round_trips_total") == batches
    assert value(text, "sankofa_db_transactions_total") == batches - 1
    assert value(text, "sankofa_batch_size_sum") == 16
    assert value(text, "sankofa_decisions_total") == 15
    assert value(text, "sankofa_queue_wait_seconds_count", priority="critical") == 6
    assert "sankofa_queue_depth" in text and "sankofa_db_pool_connections" in text


def test_metrics_add_up_across_worker_processes(settings: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(
        {
            "SANKOFA_ENVIRONMENT": "test",
            "SANKOFA_DATABASE_URL": settings.database_url,
            "SANKOFA_REDIS_URL": settings.redis_url,
            "SANKOFA_REDIS_PREFIX": settings.redis_prefix,
            "SANKOFA_HMAC_KEY": settings.hmac_key.get_secret_value(),
            "SANKOFA_LOG_LEVEL": "warning",
            "SANKOFA_WORKERS": "2",
        }
    )
    server = LiveServer(env, tmp_path / "server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url) as c:
            for i in range(40):  # new connections each time: both workers get some
                with httpx.Client(base_url=server.url) as one:
                    assert (
                        one.post("/v1/transactions", json=tx(i, customer_id=f"c{i}")).status_code
                        == 200
                    )
            time.sleep(0.6)  # gauges are sampled twice a second
            text = c.get("/metrics").text
        assert (
            value(text, "sankofa_http_requests_total", route="/v1/transactions", status="200") == 40
        )
        assert value(text, "sankofa_decisions_total") == 40
    finally:
        server.stop()


async def test_garbage_collector_pauses_are_timed(client: httpx.AsyncClient) -> None:
    import gc

    before = value((await client.get("/metrics")).text, "sankofa_gc_pause_seconds_count")
    gc.collect()  # a full collection in this process, which serves the app
    text = (await client.get("/metrics")).text
    assert value(text, "sankofa_gc_pause_seconds_count", generation="2") >= 1
    assert value(text, "sankofa_gc_pause_seconds_count") > before
