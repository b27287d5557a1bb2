"""Failover through nginx, on the native cluster (deploy/local/sankofa_cluster.py):
three `sankofa serve` instances behind the shipped nginx.conf, PostgreSQL
primary + streaming replica, Redis. Under a steady load, one instance is killed
with SIGKILL, then started again.

Held as pass/fail (the issue's own bounds, counts and ratios only):
- fewer than 0.1 % of client requests fail (anything but a 200);
- no acknowledged transaction is lost: every transaction answered 200 is a row
  in the primary, and the replica has the same rows once it has caught up;
- nginx stops choosing the killed instance (passive checks: max_fails /
  fail_timeout) and, once it is back, sends it traffic again (it rejoins).

Measured, not asserted (timings vary with the machine; docs/scaling.md has
them with this command): how soon after the kill nginx stopped trying the dead
instance, how often it probed it afterwards, how soon after the restart it
served requests again, and how many requests were retried on another instance.
Set SANKOFA_CLUSTER_REPORT=FILE to keep those figures as JSON.

Shedding on event-loop lag is off here (NO_LAG_SHEDDING): on a shared machine
it refuses requests for reasons that are not the failover's.

Why retrying POSTs is safe: nginx retries a request whose instance died
(`proxy_next_upstream error timeout http_502 http_503 non_idempotent`). A POST
/v1/transactions is idempotent by transaction_id: if the dead instance had
committed it before dying, the retry gets the stored decision back
("replayed": true) and nothing is counted twice.

Skipped when nginx, openssl, redis-server or PostgreSQL's server binaries are
missing."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy_tools import load_local_cluster

cluster_mod = load_local_cluster()

INSTANCES = 3
VICTIM = 2
#: Requests per second, spread over the instances: modest, on 2 shared cores.
RATE = 150
#: Seconds from the start of the load: kill, restart, end.
KILL_AT_S, RESTART_AT_S, END_S = 3.0, 8.0, 16.0
MAX_IN_FLIGHT = 64
#: Shedding at the door on event-loop lag off (queues/shedding.py): on a shared
#: 2-core machine, other processes' CPU shows up as lag of tens of ms and would
#: refuse requests (503) for reasons that have nothing to do with failover.
#: Shedding has its own tests; deadlines and queue bounds stay on.
NO_LAG_SHEDDING = {f"SANKOFA_SHED_LAG_MS_{c}": "0" for c in ("HIGH", "NORMAL", "LOW")}
BASE_TIME = datetime(2018, 4, 1, 10, 0, tzinfo=UTC)


def body(run: str, i: int) -> dict[str, Any]:
    return {
        "transaction_id": f"{run}-{i}",
        "timestamp": (BASE_TIME + timedelta(seconds=i)).isoformat(),
        "amount": f"{10 + i % 500}.{i % 100:02d}",
        "customer_id": f"c-{i % 400}",
        "terminal_id": f"t-{i % 150}",
    }


async def _load(cluster: Any, run: str) -> tuple[list[dict[str, Any]], float, float, float]:
    """Open-loop load at RATE for END_S seconds; the victim killed at KILL_AT_S and
    started again at RESTART_AT_S (off the event loop, the load goes on).
    Returns every request's outcome, the kill time, the restart time and the
    time the restarted instance was ready (wall clock, as nginx logs)."""
    ctx = ssl.create_default_context(cafile=str(cluster.cafile))
    results: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    loop = asyncio.get_running_loop()
    times: dict[str, float] = {}

    async def send(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            sent = time.time()
            outcome: dict[str, Any] = {"i": i, "id": f"{run}-{i}", "sent": sent}
            try:
                r = await client.post("/v1/transactions", json=body(run, i))
                outcome["status"] = r.status_code
                if r.status_code == 200:
                    outcome["replayed"] = r.json()["replayed"]
                else:
                    outcome["error"] = r.text[:300]
            except httpx.HTTPError as exc:
                outcome["status"] = None
                outcome["error"] = repr(exc)
            outcome["latency_s"] = time.time() - sent
            results.append(outcome)

    async def chaos() -> None:
        await asyncio.sleep(KILL_AT_S)
        times["kill"] = await loop.run_in_executor(None, cluster.kill_instance, VICTIM)
        await asyncio.sleep(RESTART_AT_S - KILL_AT_S)
        times["restart"] = time.time()
        times["ready"] = await loop.run_in_executor(None, cluster.restart_instance, VICTIM)

    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(
        base_url=cluster.url, verify=ctx, timeout=10.0, limits=limits
    ) as client:
        tasks: set[asyncio.Task[None]] = set()
        chaos_task = asyncio.create_task(chaos())
        start = loop.time()
        total = int(RATE * END_S)
        for i in range(total):
            delay = start + i / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(client, i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await chaos_task
        if tasks:
            await asyncio.gather(*tasks)
    return results, times["kill"], times["restart"], times["ready"]


def _attempts(entries: list[dict[str, Any]], address: str) -> list[float]:
    """When (nginx's msec) requests were tried on ``address``, first try or retry."""
    return sorted(
        e["msec"] for e in entries if address in [u.strip() for u in e["upstream"].split(",")]
    )


async def _rows(url: str, run: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT transaction_id FROM transactions WHERE transaction_id LIKE $1", f"{run}-%"
        )
    finally:
        await conn.close()
    return {r["transaction_id"] for r in rows}


@pytest.mark.timeout(240)
async def test_kill_9_one_instance_under_load(tmp_path: Path) -> None:
    missing = cluster_mod.missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages)")
    run = f"fo{os.getpid()}"
    cluster = cluster_mod.LocalCluster(
        tmp_path / "cluster", instances_count=INSTANCES, settings=NO_LAG_SHEDDING
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, cluster.__enter__)
    try:
        victim = cluster.instances[VICTIM - 1].address
        results, t_kill, t_restart, t_ready = await _load(cluster, run)
        entries = cluster.access_entries()

        # Every 200 is a row on the primary; the replica catches up to the same rows.
        acked = {r["id"] for r in results if r["status"] == 200}
        on_primary = await _rows(cluster.database_url, run)

        def caught_up() -> bool:
            return bool(cluster.replica_lag_bytes() == 0)

        deadline = time.monotonic() + 30
        while not await loop.run_in_executor(None, caught_up):
            assert time.monotonic() < deadline, "the replica did not catch up in 30 s"
            await asyncio.sleep(0.1)
        on_replica = await _rows(cluster.replica_url, run)
    finally:
        await loop.run_in_executor(None, cluster.stop)

    failed = [r for r in results if r["status"] != 200]
    total = len(results)
    # Tries of the dead instance between the kill and its restart.
    dead_tries = [t for t in _attempts(entries, victim) if t_kill <= t < t_restart]
    # nginx stops choosing it after max_fails failures; what comes later are its
    # probes, one per fail_timeout, each retried at once on a live instance.
    first_burst = [t for t in dead_tries if t - t_kill < 1.0]
    after_ready = [
        e["msec"]
        for e in entries
        if e["msec"] >= t_ready
        and e["upstream"].split(",")[-1].strip() == victim
        and e["status"] == 200
    ]
    retried = [e for e in entries if "," in e["upstream"] and e["msec"] >= t_kill]
    latencies = sorted(r["latency_s"] for r in results)

    def phase(lo: float, hi: float) -> dict[str, Any]:
        # As the client saw it (its own lag included: on a busy machine this
        # Python client falls behind its schedule) and as nginx did.
        lat = sorted(r["latency_s"] for r in results if lo <= r["sent"] < hi)
        at_nginx = sorted(e["request_time"] for e in entries if lo <= e["msec"] < hi)
        if not lat or not at_nginx:
            return {"requests": len(lat)}
        return {
            "requests": len(lat),
            "client_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "client_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
            "client_max_ms": round(lat[-1] * 1000, 1),
            "nginx_p50_ms": round(at_nginx[len(at_nginx) // 2] * 1000, 1),
            "nginx_p99_ms": round(at_nginx[int(len(at_nginx) * 0.99)] * 1000, 1),
            "nginx_max_ms": round(at_nginx[-1] * 1000, 1),
        }

    first_sent = min(r["sent"] for r in results)
    report = {
        "requests": total,
        "rate_per_s": RATE,
        "instances": INSTANCES,
        "failed": len(failed),
        "failed_fraction": len(failed) / total,
        "failed_examples": failed[:5],
        "acknowledged": len(acked),
        "acknowledged_missing_on_primary": len(acked - on_primary),
        "rows_on_primary": len(on_primary),
        "rows_on_replica": len(on_replica),
        "upstream_503s_retried": sum(1 for e in entries if "503" in e["upstream_status"]),
        "replayed_answers": sum(1 for r in results if r.get("replayed")),
        "retried_on_another_instance": len(retried),
        "retried_statuses": sorted({e["status"] for e in retried}),
        "tries_of_dead_instance_until_restart": len(dead_tries),
        "tries_of_dead_instance_first_second": len(first_burst),
        "last_try_in_first_second_after_kill_ms": round((max(first_burst) - t_kill) * 1000, 1)
        if first_burst
        else None,
        "probe_times_after_kill_s": [round(t - t_kill, 2) for t in dead_tries if t - t_kill >= 1.0],
        "restart_to_ready_s": round(t_ready - t_restart, 2),
        "ready_to_first_200_via_nginx_s": round(after_ready[0] - t_ready, 3)
        if after_ready
        else None,
        "served_by_restarted_instance": len(after_ready),
        "latency_by_phase": {
            "first_second": phase(first_sent, first_sent + 1),
            "before_kill": phase(first_sent + 1, t_kill),
            "kill_to_restart": phase(t_kill, t_restart),
            "restart_to_ready": phase(t_restart, t_ready),
            "after_ready": phase(t_ready, float("inf")),
        },
        "load_planned_s": END_S,
        "load_took_s": round(max(r["sent"] for r in results) - first_sent, 2),
        "latency_p50_ms": round(latencies[total // 2] * 1000, 1),
        "latency_p99_ms": round(latencies[int(total * 0.99)] * 1000, 1),
        "latency_max_ms": round(latencies[-1] * 1000, 1),
    }
    print(json.dumps(report, indent=2))
    if os.environ.get("SANKOFA_CLUSTER_REPORT"):
        with open(os.environ["SANKOFA_CLUSTER_REPORT"], "w") as out:  # noqa: ASYNC230
            out.write(json.dumps(report, indent=2) + "\n")

    assert total == int(RATE * END_S)
    assert len(failed) / total < 0.001, failed[:5]
    assert acked <= on_primary, sorted(acked - on_primary)[:10]
    assert on_replica == on_primary
    # The kill really hit traffic, and nginx left the dead instance alone after
    # a few tries: the rest of its share went to the live ones.
    assert first_burst, "nginx never tried the killed instance: the kill hit no traffic"
    assert len(dead_tries) < 0.05 * RATE * (t_restart - t_kill)
    # Every request that met the dead instance was retried elsewhere and answered.
    assert retried and {e["status"] for e in retried} == {200}
    # Rejoined: the restarted instance answers requests through nginx again.
    assert after_ready, "the restarted instance got no traffic through nginx"
