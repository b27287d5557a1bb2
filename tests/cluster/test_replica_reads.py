"""The native cluster (deploy/local/sankofa_cluster.py) wires its replica in: an
instance behind nginx answers a GET from the replica once it has caught up,
and from the primary (counted as a not-found fallback) while the replica's
replay is paused. One instance, so that its /metrics is the whole story.

Skipped when nginx, openssl, redis-server or PostgreSQL's server binaries are
missing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy_tools import load_local_cluster
from tests_support import tx

cluster_mod = load_local_cluster()


def counter(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


async def test_instances_read_the_replica(tmp_path: Path) -> None:
    missing = cluster_mod.missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages)")
    cluster = cluster_mod.LocalCluster(tmp_path / "cluster", instances_count=1)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, cluster.__enter__)
    try:
        instance = cluster.instances[0].url
        async with httpx.AsyncClient(base_url=cluster.plain_url, timeout=10) as c:
            r = await c.post("/v1/transactions", json=tx(1, transaction_id="cl-replica-1"))
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            while await loop.run_in_executor(None, cluster.replica_lag_bytes) != 0:
                assert time.monotonic() < deadline, "the replica did not catch up in 30 s"
                await asyncio.sleep(0.1)
            assert (await c.get("/v1/transactions/cl-replica-1")).status_code == 200
            ready = await c.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["replica"] == "ok"

            paused = await asyncpg.connect(cluster.replica_url)
            try:
                await paused.execute("SELECT pg_wal_replay_pause()")
                r = await c.post("/v1/transactions", json=tx(2, transaction_id="cl-replica-2"))
                assert r.status_code == 200, r.text
                got = await c.get("/v1/transactions/cl-replica-2")
                assert got.status_code == 200, got.text
            finally:
                await paused.execute("SELECT pg_wal_replay_resume()")
                await paused.close()
        async with httpx.AsyncClient(base_url=instance, timeout=10) as direct:
            text = (await direct.get("/metrics")).text
        assert counter(text, "sankofa_db_reads_total", server="replica") == 1
        assert counter(text, "sankofa_replica_fallbacks_total", reason="not_found") == 1
        assert counter(text, "sankofa_replica_fallbacks_total", reason="error") == 0
    finally:
        await loop.run_in_executor(None, cluster.stop)


def test_instances_are_given_the_replica_when_there_is_one(tmp_path: Path) -> None:
    with_replica = cluster_mod.LocalCluster(tmp_path / "a", instances_count=1)
    env = with_replica.instance_env()
    assert env["SANKOFA_DATABASE_REPLICA_URL"] == with_replica.replica_url
    assert env["SANKOFA_DATABASE_URL"] == with_replica.database_url
    primary_only = cluster_mod.LocalCluster(tmp_path / "b", instances_count=1, replica=False)
    assert "SANKOFA_DATABASE_REPLICA_URL" not in primary_only.instance_env()
