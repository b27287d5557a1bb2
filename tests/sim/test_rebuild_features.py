"""Redis loses the online features; PostgreSQL gives them back.

The committed slice of published data is replayed through the running service
up to a day, Redis is emptied, ``rebuild`` puts the histories back from the
stored rows and labels, and the rest of the slice is replayed: every stored
feature equals the published one, as if Redis had never been lost. Without the
rebuild the same run gives wrong features (the control)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from conftest import LiveServer
from sankofa.engine.features_online import CUSTOMER_HORIZON_S, TERMINAL_HORIZON_S, FeatureStore
from sankofa.engine.rebuild import REACH_S, marker_key, rebuild
from sankofa.settings import Settings
from sankofa.sim.data import load_raw
from sankofa.sim.replay import run_replay
from sim.test_replay_online_features import SLICE, compare_slice, replay_args

CUT = date(2018, 8, 10)  # the slice runs 2018-06-20 .. 2018-09-07


def reachable(key: bytes, record: bytes, since_s: float) -> bool:
    """Whether a window can still reach the record: ``since_s`` is the rebuild's start
    (the newest stored time less the longest reach, a terminal's); a customer's
    windows reach less far back."""
    t: float = struct.unpack("<d", record[:8])[0]
    if b":c:" in key:
        return t >= since_s + (TERMINAL_HORIZON_S - CUSTOMER_HORIZON_S)
    return t >= since_s


def histories(url: str, prefix: str) -> dict[bytes, list[bytes]]:
    """Every history under the prefix, as its sorted 24-byte records."""
    client = redis_sync.Redis.from_url(url)
    try:
        out: dict[bytes, list[bytes]] = {}
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            if b":c:" not in key and b":t:" not in key:
                continue  # the rebuild marker and its lock
            blob = client.get(key) or b""
            out[key] = sorted(blob[i : i + 24] for i in range(0, len(blob), 24))
        return out
    finally:
        client.close()


def empty_redis(url: str, prefix: str, *, keep_marker: bool = False) -> None:
    client = redis_sync.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keep_marker:
            keys = [k for k in keys if not k.startswith(marker_key(prefix).encode())]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def within_reach(state: dict[bytes, list[bytes]], since_s: float) -> dict[bytes, list[bytes]]:
    """The records a window can still reach (Redis drops older ones lazily, when it
    next rewrites a key, so a live history may hold a few more)."""
    kept = {k: [r for r in v if reachable(k, r, since_s)] for k, v in state.items()}
    return {k: v for k, v in kept.items() if v}


def post_labels_up_to_cut(url: str) -> None:
    """The labels of the first part, as an analyst would have posted them by now (a
    window reads a label only once its transaction is older than the label delay, so
    knowing them early changes no feature)."""
    raw = load_raw(SLICE)
    day = raw.tx_datetime // 86_400
    cut = (CUT - date(1970, 1, 1)).days
    rows = np.flatnonzero((day <= cut) & (raw.amount_cents > 0))
    labels = [
        {
            "transaction_id": str(int(raw.transaction_id[i])),
            "fraud": bool(raw.fraud[i]),
            "labelled_at": "2018-09-10T00:00:00Z",
        }
        for i in rows
    ]
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(0, len(labels), 1000):
            r = client.post("/v1/labels", json={"labels": labels[i : i + 1000]})
            assert r.status_code == 200, r.text


async def rebuild_now(settings: Settings) -> dict[str, object]:
    assert settings.database_url and settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        store = FeatureStore(
            redis=redis,
            prefix=settings.redis_prefix,
            timeout_s=10.0,
            key_ttl_s=settings.feature_key_ttl_s,
        )
        seen: list[tuple[int, int]] = []
        report = await rebuild(
            pool,
            store,
            redis,
            settings.redis_prefix,
            batch=500,
            progress=lambda d, t: seen.append((d, t)),
        )
        assert seen and seen[-1][0] == seen[-1][1] == report.transactions  # progress shown
        return report.as_dict()
    finally:
        await pool.close()
        await redis.aclose()


async def rebuild_start(database_url: str) -> float:
    """Where a rebuild starts reading: the newest stored time less the longest reach."""
    conn = await asyncpg.connect(database_url)
    try:
        newest = await conn.fetchval("SELECT max(event_time) FROM transactions")
    finally:
        await conn.close()
    return float(newest.timestamp() - REACH_S)


def rebuilt_by_the_service(live_server: LiveServer, settings: Settings) -> dict[str, object]:
    """Wait for the running service to notice the lost histories and rebuild them."""
    client = redis_sync.Redis.from_url(settings.redis_url or "")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stamp = client.get(marker_key(settings.redis_prefix))
            ready = httpx.get(f"{live_server.url}/health/ready", timeout=2).json()
            if stamp is not None and ready["checks"]["features_complete"]:
                return {"marker": float(stamp)}
            time.sleep(0.1)
        raise AssertionError("the service did not rebuild the features")
    finally:
        client.close()


def replay_in_two_parts(
    live_server: LiveServer,
    settings: Settings,
    tmp_path: Path,
    *,
    with_rebuild: bool,
    automatic: bool = False,
    keep_marker: bool = False,
) -> dict[str, object] | None:
    first = run_replay(replay_args(live_server.url, tmp_path / "first.json", date_to=CUT))
    assert first == 0, (tmp_path / "first.json").read_text()
    post_labels_up_to_cut(live_server.url)
    before = histories(settings.redis_url or "", settings.redis_prefix)
    assert before
    empty_redis(settings.redis_url or "", settings.redis_prefix, keep_marker=keep_marker)
    report = None
    if automatic:
        report = rebuilt_by_the_service(live_server, settings)
        since = asyncio.run(rebuild_start(settings.database_url or ""))
        after = histories(settings.redis_url or "", settings.redis_prefix)
        assert within_reach(after, since) == within_reach(before, since)
    elif with_rebuild:
        report = asyncio.run(rebuild_now(settings))
        since = datetime.fromisoformat(str(report["since"])).timestamp()
        after = histories(settings.redis_url or "", settings.redis_prefix)
        # Record for record, every history a window can still reach, as Redis held it
        # before it lost them.
        assert within_reach(after, since) == within_reach(before, since)
    second_path = tmp_path / "second.json"
    second = run_replay(replay_args(live_server.url, second_path, date_from=date(2018, 8, 11)))
    assert second == 0, second_path.read_text()
    assert json.loads(second_path.read_text())["accepted"] > 1000
    return report


def assert_published_features(database_url: str) -> None:
    result = compare_slice(database_url)
    assert result.rows_stored > 10_000
    assert result.values_compared > 10_000
    assert result.values_unexplained == 0, result.examples


def test_rebuild_after_redis_is_lost_gives_the_published_features(
    live_server: LiveServer, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    report = replay_in_two_parts(live_server, settings, tmp_path, with_rebuild=True)
    assert report is not None and report["transactions"] and report["labels_applied"]
    client = redis_sync.Redis.from_url(settings.redis_url or "")
    try:
        assert client.exists(marker_key(settings.redis_prefix))
    finally:
        client.close()
    assert_published_features(database_url)


def test_the_service_notices_and_rebuilds_by_itself(
    live_server: LiveServer, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """No operator: the running service sees the marker gone, rebuilds from PostgreSQL,
    and the rest of the replay stores the published features."""
    replay_in_two_parts(live_server, settings, tmp_path, with_rebuild=False, automatic=True)
    assert_published_features(database_url)


def test_without_the_rebuild_the_features_are_wrong(
    live_server: LiveServer, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """The control: the histories lost but the marker kept, so nothing tells the service
    (as when Redis evicts keys under memory pressure: run it with noeviction), and no
    rebuild: the same run stores features that differ."""
    replay_in_two_parts(live_server, settings, tmp_path, with_rebuild=False, keep_marker=True)
    result = compare_slice(database_url)
    assert result.values_unexplained > 1000


@pytest.mark.parametrize("batch", [0, -1])
def test_rebuild_refuses_a_batch_below_one(batch: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        asyncio.run(rebuild(None, None, None, "p", batch=batch))  # type: ignore[arg-type]


def run_rebuild_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sankofa.cli", "features", "rebuild", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_features_rebuild_command(
    live_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    """`sankofa features rebuild`, as an operator runs it, with the service's settings."""
    assert run_replay(replay_args(live_server.url, tmp_path / "r.json", date_to=CUT)) == 0
    url = settings.redis_url or ""
    before = histories(url, settings.redis_prefix)
    empty_redis(url, settings.redis_prefix)
    done = run_rebuild_command(live_server.env, "--batch", "300")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["transactions"] > 1000
    assert "rebuilding:" in done.stderr  # progress shown
    since = datetime.fromisoformat(report["since"]).timestamp()
    assert within_reach(histories(url, settings.redis_prefix), since) == within_reach(before, since)
    # Run twice: nothing counted twice.
    again = run_rebuild_command(live_server.env)
    assert again.returncode == 0, again.stderr
    assert within_reach(histories(url, settings.redis_prefix), since) == within_reach(before, since)
