"""Reads from a streaming replica (issue 7, part 2), through the real app, against
a real PostgreSQL primary and a hot-standby replica made with pg_basebackup
(``servers.private_postgres_pair``: about 2 s to build, stopped and removed at
the end of the module).

- a GET is answered by the replica: a row changed on the primary while the
  replica's replay is paused comes back as the replica still has it;
- POST then an immediate GET never 404s while the replica lags (replay
  paused): the primary answers, and the fallback is counted; labels, a write,
  go to the primary;
- the replica stopped: GETs are answered by the primary, readiness stays
  ready (the replica reported unavailable), and an instance starts without it;
- ``sankofa shadow report`` reads the replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from sankofa.api.app import create_app
from sankofa.settings import Settings
from sankofa.store.reads import connect_for_reads
from sankofa.store.shadow import shadow_report
from servers import PostgresPair, private_postgres_pair
from tests_support import tx


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PostgresPair]:
    with private_postgres_pair() as pair:
        yield pair


@pytest.fixture
def settings(settings_factory: Any, pg_pair: PostgresPair) -> Settings:
    """conftest's ``client`` and ``services``, on the pair: writes to its primary,
    reads from its replica."""
    s: Settings = settings_factory(
        database_url=pg_pair.primary_url,
        database_replica_url=pg_pair.replica_url,
        # These tests change rows behind the service's back and watch which server
        # answers: every GET must reach the loader, not the layered cache.
        cache_l1_ttl_s=0,
        cache_l2_ttl_s=0,
    )
    return s


@pytest.fixture
async def paused_replay(pg_pair: PostgresPair) -> AsyncIterator[None]:
    """The replica stops replaying WAL (it lags, as far as readers can tell)."""
    await pg_pair.caught_up()
    await pg_pair.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        await pg_pair.replica_sql("SELECT pg_wal_replay_resume()")


def sample(services: Any, name: str, **labels: str) -> float:
    value = services.metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name} {labels}"
    return float(value)


def fallbacks(services: Any, reason: str) -> float:
    return sample(services, "sankofa_replica_fallbacks_total", reason=reason)


async def on(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def test_a_get_is_answered_by_the_replica(
    client: httpx.AsyncClient, services: Any, pg_pair: PostgresPair
) -> None:
    r = await client.post("/v1/transactions", json=tx(101, transaction_id="rr-served"))
    assert r.status_code == 200, r.text
    await pg_pair.caught_up()
    await pg_pair.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        # The primary's copy now differs from the replica's, which cannot see it.
        await on(
            pg_pair.primary_url,
            "UPDATE transactions SET model_version = 'changed-on-primary'"
            " WHERE transaction_id = 'rr-served'",
        )
        before = sample(services, "sankofa_db_reads_total", server="replica")
        got = await client.get("/v1/transactions/rr-served")
        assert got.status_code == 200, got.text
        assert got.json()["decision"]["model_version"] == r.json()["model_version"]
        assert sample(services, "sankofa_db_reads_total", server="replica") == before + 1
    finally:
        await pg_pair.replica_sql("SELECT pg_wal_replay_resume()")
    await pg_pair.caught_up()
    got = await client.get("/v1/transactions/rr-served")
    assert got.json()["decision"]["model_version"] == "changed-on-primary"


async def test_post_then_get_never_404s_while_the_replica_lags(
    client: httpx.AsyncClient, services: Any, pg_pair: PostgresPair, paused_replay: None
) -> None:
    not_found = fallbacks(services, "not_found")
    for i in range(5):
        tid = f"rr-fresh-{i}"
        posted = await client.post("/v1/transactions", json=tx(200 + i, transaction_id=tid))
        assert posted.status_code == 200, posted.text
        got = await client.get(f"/v1/transactions/{tid}")
        assert got.status_code == 200, got.text
        assert got.json()["decision"]["decision"] == posted.json()["decision"]
        # Not on the replica: the primary had to answer.
        assert (
            await on(
                pg_pair.replica_url,
                "SELECT count(*) FROM transactions WHERE transaction_id = $1",
                tid,
            )
            == 0
        )
    assert fallbacks(services, "not_found") == not_found + 5
    # Unknown on both: asked of both, then 404.
    missing = await client.get("/v1/transactions/rr-nowhere")
    assert missing.status_code == 404
    assert fallbacks(services, "not_found") == not_found + 6
    # A write goes to the primary: the replica does not know the transaction yet,
    # and would refuse the write anyway.
    labelled = await client.post(
        "/v1/labels",
        json={
            "labels": [
                {
                    "transaction_id": "rr-fresh-0",
                    "fraud": True,
                    "labelled_at": "2018-04-02T10:00:00-03:00",
                }
            ]
        },
    )
    assert labelled.status_code == 200, labelled.text
    assert labelled.json() == {"received": 1, "applied": 1}
    assert fallbacks(services, "error") == 0


async def test_replica_down_reads_come_from_the_primary_and_ready_stays_ready(
    client: httpx.AsyncClient, services: Any, pg_pair: PostgresPair, settings: Settings
) -> None:
    posted = await client.post("/v1/transactions", json=tx(300, transaction_id="rr-down"))
    assert posted.status_code == 200, posted.text
    await pg_pair.caught_up()
    assert (await client.get("/v1/transactions/rr-down")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["replica"] == "ok"
    pg_pair.stop_replica()
    try:
        errors = fallbacks(services, "error")
        got = await client.get("/v1/transactions/rr-down")
        assert got.status_code == 200, got.text
        assert got.json()["transaction"]["transaction_id"] == "rr-down"
        assert fallbacks(services, "error") == errors + 1
        # Within the retry delay the replica is not even tried.
        skipped = fallbacks(services, "skipped")
        assert (await client.get("/v1/transactions/rr-down")).status_code == 200
        assert fallbacks(services, "skipped") == skipped + 1
        assert (await client.get("/v1/transactions/rr-none")).status_code == 404
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["replica"] == "unavailable"
        # An instance starts without its replica, and is ready.
        app = create_app(settings)
        async with app.router.lifespan_context(app) as state:
            assert state["services"].reads.replica is not None
            assert await state["services"].reads.replica_state(0.5) == "unavailable"
        # Reports read the primary then.
        conn = await connect_for_reads(pg_pair.primary_url, pg_pair.replica_url, timeout_s=2)
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        finally:
            await conn.close()
    finally:
        pg_pair.start_replica()
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["replica"] == "ok"
    # Back on the replica as soon as readiness has seen it answer.
    before = sample(services, "sankofa_db_reads_total", server="replica")
    assert (await client.get("/v1/transactions/rr-down")).status_code == 200
    assert sample(services, "sankofa_db_reads_total", server="replica") == before + 1
    conn = await connect_for_reads(pg_pair.primary_url, pg_pair.replica_url, timeout_s=2)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await conn.close()


async def test_the_shadow_report_reads_the_replica(
    client: httpx.AsyncClient, pg_pair: PostgresPair
) -> None:
    ids = [f"rr-shadow-{i}" for i in range(3)]
    for i, tid in enumerate(ids):
        r = await client.post("/v1/transactions", json=tx(400 + i, transaction_id=tid))
        assert r.status_code == 200, r.text
    shadow = (
        "UPDATE transactions SET shadow_decision = decision, shadow_risk_score = risk_score,"
        " shadow_model_version = 'challenger' WHERE transaction_id = ANY($1::text[])"
    )
    await on(pg_pair.primary_url, shadow, ids[:2])
    await pg_pair.caught_up()
    await pg_pair.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        await on(pg_pair.primary_url, shadow, ids[2:])
        from_replica = await shadow_report(pg_pair.primary_url, replica_url=pg_pair.replica_url)
        from_primary = await shadow_report(pg_pair.primary_url)
    finally:
        await pg_pair.replica_sql("SELECT pg_wal_replay_resume()")
    assert (from_replica["transactions"], from_primary["transactions"]) == (2, 3)


async def test_a_replica_that_hangs_costs_one_timeout_then_is_skipped(
    client: httpx.AsyncClient, services: Any, pg_pair: PostgresPair, settings: Settings
) -> None:
    posted = await client.post("/v1/transactions", json=tx(500, transaction_id="rr-hang"))
    assert posted.status_code == 200, posted.text
    await pg_pair.caught_up()
    # A pooled connection to the replica, which the next read will reuse.
    assert (await client.get("/v1/transactions/rr-hang")).status_code == 200
    errors, skipped = fallbacks(services, "error"), fallbacks(services, "skipped")
    with pg_pair.frozen_replica():
        got = await client.get("/v1/transactions/rr-hang")
        assert got.status_code == 200, got.text
        assert fallbacks(services, "error") == errors + 1
        assert (await client.get("/v1/transactions/rr-hang")).status_code == 200
        assert fallbacks(services, "skipped") == skipped + 1
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["replica"] == "unavailable"
