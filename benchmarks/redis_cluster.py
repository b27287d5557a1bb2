"""The online features on one Redis and on a three-master Redis Cluster, side by
side: transactions per second and milliseconds per batch of ``FeatureStore.compute``
by batch size, with round trips and script calls per batch, the CPU of this
(client) process and of the Redis servers. Starts its own cluster on loopback
(deploy/local/sankofa_cluster.py) and its own Redis; needs redis-server 7.

    .venv/bin/python benchmarks/redis_cluster.py [--seconds 5] [--repeat 3] [--json FILE]

The transactions are the committed slice of published data (tests/fixtures),
sent again and again under new ids and shifted in time, so histories grow as in
service. Writes a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sankofa.engine.features_cluster import ClusterFeatureStore, cluster_client  # noqa: E402
from sankofa.engine.features_online import FeatureStore  # noqa: E402

SIZES = (1, 16, 64, 256, 1000)
TTL_S = 45 * 86_400


def _local_cluster() -> Any:
    spec = importlib.util.spec_from_file_location(
        "sankofa_cluster", ROOT / "deploy" / "local" / "sankofa_cluster.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["sankofa_cluster"] = module
    spec.loader.exec_module(module)
    return module


async def run(
    store: FeatureStore, txs: list[Any], size: int, seconds: float, pids: list[int]
) -> dict[str, Any]:
    procs = [psutil.Process(p) for p in pids]
    cpu0 = [p.cpu_times() for p in procs]
    trips0 = store.round_trips
    calls0 = getattr(store, "script_calls", store.round_trips)
    start = time.perf_counter()
    done = batches = 0
    lap = 0
    # Only compute() is timed (wall and this process's CPU): making the batch is not.
    wall = cpu = 0.0
    while time.perf_counter() - start < seconds:
        batch = []
        for i in range(size):
            tx = txs[(done + i) % len(txs)]
            k = (done + i) // len(txs)
            batch.append(
                replace(
                    tx,
                    transaction_id=f"{tx.transaction_id}-{lap}-{k}",
                    event_time_s=tx.event_time_s + k * 80 * 86_400,
                )
            )
        t0, c0 = time.perf_counter(), time.process_time()
        await store.compute(batch)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        done += size
        batches += 1
    redis_cpu = sum(
        (b.user + b.system) - (a.user + a.system)
        for a, b in zip(cpu0, (p.cpu_times() for p in procs), strict=True)
    )
    return {
        "batch": size,
        "tx_per_s": round(done / wall),
        "ms_per_batch": round(1000 * wall / batches, 3),
        "round_trips_per_batch": round((store.round_trips - trips0) / batches, 2),
        "script_calls_per_batch": round(
            (getattr(store, "script_calls", store.round_trips) - calls0) / batches, 2
        ),
        "client_cpu_ms_per_batch": round(1000 * cpu / batches, 3),
        "redis_cpu_ms_per_batch": round(1000 * redis_cpu / batches, 3),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    from cluster.test_redis_cluster_features import slice_transactions

    txs, _ = slice_transactions()
    mod = _local_cluster()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = mod.free_port()
        single = subprocess.Popen(  # noqa: ASYNC220 (started once, before timing)
            [
                mod.redis7_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            with mod.RedisCluster(Path(tmp) / "rc", masters=3) as rc:
                await asyncio.sleep(0.5)
                one = Redis.from_url(f"redis://127.0.0.1:{port}/0")
                many = cluster_client(rc.url, max_connections=8, timeout_s=10.0)
                stores = {
                    "one Redis": (
                        FeatureStore(redis=one, prefix="b1", timeout_s=10.0, key_ttl_s=TTL_S),
                        [single.pid],
                    ),
                    "cluster, 3 masters": (
                        ClusterFeatureStore(
                            redis=many, prefix="b3", timeout_s=10.0, key_ttl_s=TTL_S
                        ),
                        [p.pid for _, p in rc.nodes],
                    ),
                }
                # Warm up: a month of history in both.
                for store, _ in stores.values():
                    for i in range(0, 3000, 500):
                        await store.compute(txs[i : i + 500])
                # Interleaved, repeated, median of each figure: the machine is shared.
                runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
                for _ in range(args.repeat):
                    for size in args.sizes:
                        for name, (store, pids) in stores.items():
                            row = await run(store, txs[3000:], size, args.seconds, pids)
                            runs.setdefault((name, size), []).append(row)
                            print(name, row, file=sys.stderr)
                for (name, size), found in runs.items():
                    rows.append(
                        {
                            "redis": name,
                            **{k: statistics.median(r[k] for r in found) for k in found[0]},
                            "batch": size,
                        }
                    )
                await one.aclose()
                await many.aclose()
        finally:
            single.terminate()
            single.wait()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="per batch size and Redis")
    p.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES)
    p.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved (median)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = asyncio.run(main_async(args))
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        command = "python benchmarks/redis_cluster.py " + " ".join(sys.argv[1:])
        body = {"command": command, "rows": rows, "machine_cpus": psutil.cpu_count()}
        args.json.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
