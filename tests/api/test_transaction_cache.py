"""GET /v1/transactions/{id} through the layered cache, over HTTP against the real
app (issue 5, item 5).

- eight concurrent GETs of one id read the database once;
- a label posted on one instance shows on another instance's GET within a
  second (two apps on the same Redis);
- the cache's Redis stopped, or never there: GETs and labels still answer,
  the failures are counted in /metrics;
- /metrics exports lookups (hit or miss) and latency per layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from conftest import _with_state, free_port
from sankofa.api.app import create_app
from sankofa.settings import Settings
from servers import private_redis
from tests_support import tx

LABEL = {"transaction_id": "tc-1", "fraud": True, "labelled_at": "2018-04-02T10:00:00-03:00"}

Instance = tuple[httpx.AsyncClient, Any]


@pytest.fixture
async def instances(settings_factory: Any) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    """Starts app instances on the test database and Redis prefix (settings
    overridable): (client, services) each; all stopped at the end."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Instance:
            settings: Settings = settings_factory(**overrides)
            app = create_app(settings)
            state = await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=_with_state(app, state))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://sankofa.test")
            )
            return client, state["services"]

        yield start


def sample(services: Any, name: str, **labels: str) -> float:
    return float(services.metrics.registry.get_sample_value(name, labels) or 0.0)


def cache_sample(services: Any, layer: str, result: str) -> float:
    return sample(
        services,
        "sankofa_cache_lookups_total",
        cache="transactions",
        layer=layer,
        result=result,
    )


def cache_failures(services: Any) -> float:
    total = 0.0
    for metric in services.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "sankofa_cache_failures_total":
                total += s.value
    return total


async def test_eight_concurrent_gets_read_the_database_once(
    instances: Callable[..., Awaitable[Instance]],
) -> None:
    client, services = await instances()
    posted = await client.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))
    assert posted.status_code == 200, posted.text
    reads = sample(services, "sankofa_db_reads_total", server="primary")
    got = await asyncio.gather(*(client.get("/v1/transactions/tc-1") for _ in range(8)))
    assert [r.status_code for r in got] == [200] * 8
    assert len({r.content for r in got}) == 1
    assert got[0].json()["decision"]["decision"] == posted.json()["decision"]
    assert sample(services, "sankofa_db_reads_total", server="primary") == reads + 1
    assert cache_sample(services, "l3", "hit") == 1
    again = await client.get("/v1/transactions/tc-1")
    assert again.content == got[0].content
    assert cache_sample(services, "l1", "hit") == 1
    assert sample(services, "sankofa_db_reads_total", server="primary") == reads + 1


async def test_unknown_id_is_404_and_not_remembered(
    instances: Callable[..., Awaitable[Instance]],
) -> None:
    client, _ = await instances()
    assert (await client.get("/v1/transactions/tc-1")).status_code == 404
    assert (await client.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))).is_success
    assert (await client.get("/v1/transactions/tc-1")).status_code == 200


async def test_a_label_on_one_instance_shows_on_the_other_within_a_second(
    instances: Callable[..., Awaitable[Instance]],
) -> None:
    a, _ = await instances()
    b, b_services = await instances()
    assert (await a.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))).is_success
    assert (await a.get("/v1/transactions/tc-1")).json()["label"] is None
    assert (await b.get("/v1/transactions/tc-1")).json()["label"] is None
    assert (await b.get("/v1/transactions/tc-1")).json()["label"] is None  # B's L1 now
    assert cache_sample(b_services, "l1", "hit") == 1
    labelled = await a.post("/v1/labels", json={"labels": [LABEL]})
    assert labelled.status_code == 200, labelled.text
    assert (await a.get("/v1/transactions/tc-1")).json()["label"]["fraud"] is True
    async with asyncio.timeout(1.0):
        while (await b.get("/v1/transactions/tc-1")).json()["label"] is None:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the message comes from Redis: nothing here to await


async def test_cache_redis_stopped_is_never_an_error(
    instances: Callable[..., Awaitable[Instance]], tmp_path: Path
) -> None:
    with private_redis(tmp_path) as url:
        client, services = await instances(cache_redis_url=url)
        assert (await client.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))).is_success
        assert (await client.get("/v1/transactions/tc-1")).status_code == 200
        stopper = redis_sync.Redis.from_url(url)
        try:
            stopper.shutdown(nosave=True)
        except redis_sync.ConnectionError:
            pass  # the server closes the connection as it goes
        finally:
            stopper.close()
        for _ in range(3):
            assert (await client.get("/v1/transactions/tc-1")).status_code == 200
        labelled = await client.post("/v1/labels", json={"labels": [LABEL]})
        assert labelled.status_code == 200, labelled.text
        assert (await client.get("/v1/transactions/tc-1")).json()["label"]["fraud"] is True
        assert (await client.get("/v1/transactions/tc-none")).status_code == 404
        assert cache_failures(services) >= 1
        text = (await client.get("/metrics")).text
        assert 'sankofa_cache_failures_total{cache="transactions",layer="l2"' in text


async def test_cache_redis_never_there_is_never_an_error(
    instances: Callable[..., Awaitable[Instance]],
) -> None:
    client, services = await instances(cache_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert (await client.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))).is_success
    for _ in range(2):
        assert (await client.get("/v1/transactions/tc-1")).status_code == 200
    assert (await client.post("/v1/labels", json={"labels": [LABEL]})).status_code == 200
    assert (await client.get("/v1/transactions/tc-1")).json()["label"]["fraud"] is True
    assert cache_failures(services) >= 1


async def test_metrics_export_hits_misses_and_latency_per_layer(
    instances: Callable[..., Awaitable[Instance]],
) -> None:
    client, _ = await instances()
    assert (await client.post("/v1/transactions", json=tx(1, transaction_id="tc-1"))).is_success
    for _ in range(3):
        assert (await client.get("/v1/transactions/tc-1")).status_code == 200
    text = (await client.get("/metrics")).text
    for layer, result, value in (
        ("l1", "miss", 1.0),
        ("l1", "hit", 2.0),
        ("l2", "miss", 1.0),
        ("l3", "hit", 1.0),
    ):
        line = (
            f'sankofa_cache_lookups_total{{cache="transactions",layer="{layer}",'
            f'result="{result}"}} {value}'
        )
        assert line in text
    for layer in ("l1", "l2", "l3"):
        assert (
            f'sankofa_cache_latency_seconds_count{{cache="transactions",layer="{layer}"}}' in text
        )
