"""The figures of docs/rules-and-cache.md (Cache, Compression), against a running
``sankofa serve``.

``post``: 1,000-transaction batches of the published data (in time order),
gzip's sizes at levels 1, 6 and 9 and its cost, then each batch posted alternately
plain and gzipped both ways (``Content-Encoding`` and ``Accept-Encoding``): the
bytes on the wire each way, and the request latency. Writes the stored ids to
``--ids``.

``gets``: a GET-by-id workload over those ids (Zipf-distributed popularity, a few
labels posted meanwhile, each invalidating its id on every instance), then the
server's own cache series from /metrics: lookups and hit ratio per layer, latency
per layer (mean, and the histogram's p50 / p99 bucket bounds), and the clients'
latency.

    .venv/bin/python benchmarks/cache_and_gzip.py post --url URL --input DATA --ids ids.txt
    .venv/bin/python benchmarks/cache_and_gzip.py gets --url URL --ids ids.txt

Writes markdown to stdout and, with --json FILE, the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from sankofa.sim.data import load_raw

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "handbook-raw-slice.csv.gz"


def gzip_level(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def batches(path: Path, n_batches: int, run: str) -> list[list[dict[str, Any]]]:
    raw = load_raw(path)
    need = n_batches * 1000
    if len(raw) < need:
        raise SystemExit(f"{path} has {len(raw)} rows; {need} needed")
    out: list[list[dict[str, Any]]] = []
    for b in range(n_batches):
        items = []
        for i in range(b * 1000, (b + 1) * 1000):
            local = datetime.fromtimestamp(int(raw.tx_datetime[i]), UTC).replace(tzinfo=None)
            c = int(raw.amount_cents[i])
            items.append(
                {
                    "transaction_id": f"{run}-{int(raw.transaction_id[i])}",
                    "timestamp": local.strftime("%Y-%m-%dT%H:%M:%S") + "-03:00",
                    "amount": f"{c // 100}.{c % 100:02d}",
                    "customer_id": str(int(raw.customer_id[i])),
                    "terminal_id": str(int(raw.terminal_id[i])),
                    "type": "card",
                }
            )
        out.append(items)
    return out


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run_post(args: argparse.Namespace) -> dict[str, Any]:
    groups = batches(Path(args.input), args.batches, args.run)
    bodies = [orjson.dumps({"transactions": g}) for g in groups]
    levels: dict[int, dict[str, float]] = {}
    for level in (1, 6, 9):
        sizes, costs, inflate = [], [], []
        for body in bodies:
            t0 = time.perf_counter()
            packed = gzip_level(body, level)
            costs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            zlib.decompress(packed, 31)
            inflate.append(time.perf_counter() - t0)
            sizes.append(len(packed))
        levels[level] = {
            "bytes": statistics.median(sizes),
            "compress_ms": ms(statistics.median(costs)),
            "inflate_ms": ms(statistics.median(inflate)),
        }
    plain_req = statistics.median(len(b) for b in bodies)
    results: dict[str, list[Any]] = {"plain": [], "gzip": []}
    ids: list[str] = []
    answer_bodies: list[bytes] = []
    with httpx.Client(base_url=args.url, timeout=60) as client:
        for k, body in enumerate(bodies):
            mode = "gzip" if k % 2 else "plain"
            headers = {"Content-Type": "application/json"}
            if mode == "gzip":
                content = gzip_level(body, args.level)
                headers |= {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
            else:
                content = body
                headers |= {"Accept-Encoding": "identity"}
            t0 = time.perf_counter()
            r = client.post("/v1/transactions/batch", content=content, headers=headers)
            elapsed = time.perf_counter() - t0
            r.raise_for_status()
            results[mode].append(
                {
                    "request_bytes": len(content),
                    "response_wire_bytes": r.num_bytes_downloaded,
                    "response_bytes": len(r.content),
                    "encoding": r.headers.get("content-encoding", "identity"),
                    "seconds": elapsed,
                }
            )
            ids += [d["transaction_id"] for d in r.json()["results"]]
            answer_bodies.append(r.content)
    Path(args.ids).write_text("\n".join(ids) + "\n")
    answers = [a for a in answer_bodies if a]
    response_levels: dict[int, dict[str, float]] = {}
    for level in (1, 6, 9):
        sizes, costs = [], []
        for body in answers:
            t0 = time.perf_counter()
            sizes.append(len(gzip_level(body, level)))
            costs.append(time.perf_counter() - t0)
        response_levels[level] = {
            "bytes": statistics.median(sizes),
            "compress_ms": ms(statistics.median(costs)),
        }
    plain_resp = statistics.median(len(a) for a in answers)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(x[key] for x in results[mode]))

    out = {
        "batches": len(bodies),
        "request_plain_bytes": plain_req,
        "levels": levels,
        "response_plain_bytes": plain_resp,
        "response_levels": response_levels,
        "server_level": args.level,
        "wire": {
            mode: {
                "request_bytes": med(mode, "request_bytes"),
                "response_wire_bytes": med(mode, "response_wire_bytes"),
                "response_bytes": med(mode, "response_bytes"),
                "latency_ms": ms(med(mode, "seconds")),
                "n": len(results[mode]),
            }
            for mode in results
        },
    }
    w = out["wire"]
    print(f"1,000-transaction batches: {len(bodies)} from {args.input}\n")
    print("Requests (the batch as sent):\n")
    print("| gzip level | request bytes (median) | saved | compress ms | inflate ms |")
    print("|---|---|---|---|---|")
    print(f"| none | {plain_req:,.0f} | - | - | - |")
    for level, v in levels.items():
        saved = 1 - v["bytes"] / plain_req
        print(
            f"| {level} | {v['bytes']:,.0f} | {saved:.1%} | {v['compress_ms']} | {v['inflate_ms']} |"
        )
    print("\nResponses (the 1,000 decisions as answered):\n")
    print("| gzip level | response bytes (median) | saved | compress ms |")
    print("|---|---|---|---|")
    print(f"| none | {plain_resp:,.0f} | - | - |")
    for level, v in response_levels.items():
        saved = 1 - v["bytes"] / plain_resp
        print(f"| {level} | {v['bytes']:,.0f} | {saved:.1%} | {v['compress_ms']} |")
    print(f"\nOver HTTP (the server gzips responses at level {args.level}):\n")
    print("| mode | requests | request bytes | response bytes on the wire | latency ms (median) |")
    print("|---|---|---|---|---|")
    for mode, v in w.items():
        print(
            f"| {mode} | {v['n']} | {v['request_bytes']:,.0f} | {v['response_wire_bytes']:,.0f}"
            f" (of {v['response_bytes']:,.0f}) | {v['latency_ms']} |"
        )
    return out


def scrape(url: str) -> dict[str, Any]:
    text = httpx.get(f"{url}/metrics", timeout=10, headers={"Accept-Encoding": "identity"}).text
    lookups: dict[tuple[str, str], float] = {}
    latency: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("cache") != "transactions":
                continue
            if s.name == "sankofa_cache_lookups_total":
                key = (s.labels["layer"], s.labels["result"])
                lookups[key] = lookups.get(key, 0.0) + s.value
            elif s.name.startswith("sankofa_cache_latency_seconds"):
                layer = latency.setdefault(s.labels["layer"], {"buckets": {}})
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    layer["buckets"][le] = layer["buckets"].get(le, 0.0) + s.value
                elif s.name.endswith("_sum"):
                    layer["sum"] = layer.get("sum", 0.0) + s.value
                elif s.name.endswith("_count"):
                    layer["count"] = layer.get("count", 0.0) + s.value
    return {"lookups": lookups, "latency": latency}


def quantile_bound(buckets: dict[float, float], q: float) -> float:
    total = buckets[float("inf")]
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return float("inf")


async def get_workload(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    popularity = rng.permutation(len(ids))  # rank of each id
    if args.draw_seed is not None:  # the same popular ids, other draws
        rng = np.random.default_rng(args.draw_seed)
    weights = 1.0 / (popularity + 1.0) ** args.zipf
    weights /= weights.sum()
    picks = rng.choice(len(ids), size=args.gets, p=weights)
    labelled = rng.choice(len(ids), size=args.labels, replace=False)
    label_at = set(np.linspace(0, args.gets - 1, args.labels, dtype=int).tolist())
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for k in range(args.gets):
        queue.put_nowait(k)
    label_iter = iter(labelled.tolist())

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                k = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if k in label_at:
                tid = ids[next(label_iter)]
                r = await client.post(
                    "/v1/labels",
                    json={"labels": [{"transaction_id": tid, "fraud": True}]},
                )
                r.raise_for_status()
            t0 = time.perf_counter()
            r = await client.get(f"/v1/transactions/{ids[int(picks[k])]}")
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    before = scrape(args.url)
    limits = httpx.Limits(max_connections=args.concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    after = scrape(args.url)
    layers: dict[str, Any] = {}
    for layer in ("l1", "l2", "l3"):
        hit = after["lookups"].get((layer, "hit"), 0) - before["lookups"].get((layer, "hit"), 0)
        miss = after["lookups"].get((layer, "miss"), 0) - before["lookups"].get((layer, "miss"), 0)
        lat_a = after["latency"].get(layer, {"buckets": {}, "sum": 0.0, "count": 0.0})
        lat_b = before["latency"].get(layer, {"buckets": {}, "sum": 0.0, "count": 0.0})
        count = lat_a.get("count", 0.0) - lat_b.get("count", 0.0)
        buckets = {
            le: v - lat_b["buckets"].get(le, 0.0) for le, v in lat_a.get("buckets", {}).items()
        }
        layers[layer] = {
            "hits": hit,
            "misses": miss,
            "hit_ratio": hit / (hit + miss) if hit + miss else None,
            "calls": count,
            "mean_ms": (lat_a.get("sum", 0.0) - lat_b.get("sum", 0.0)) / count * 1000
            if count
            else None,
            "p50_le_ms": quantile_bound(buckets, 0.5) * 1000 if count else None,
            "p99_le_ms": quantile_bound(buckets, 0.99) * 1000 if count else None,
        }
    lat = sorted(latencies)
    l1 = layers["l1"]
    served_by_cache = (layers["l1"]["hits"] + layers["l2"]["hits"]) / (l1["hits"] + l1["misses"])
    out = {
        "gets": args.gets,
        "ids": len(ids),
        "labels": args.labels,
        "statuses": statuses,
        "wall_s": wall,
        "gets_per_s": args.gets / wall,
        "client_p50_ms": lat[len(lat) // 2] * 1000,
        "client_p99_ms": lat[int(len(lat) * 0.99)] * 1000,
        "layers": layers,
        "served_by_cache": served_by_cache,
    }
    print(
        f"{args.gets:,} GETs over {len(ids):,} ids (Zipf s={args.zipf}), {args.labels} labels"
        f" posted meanwhile, {args.concurrency} connections: {out['gets_per_s']:,.0f} GET/s,"
        f" client p50 {out['client_p50_ms']:.2f} ms, p99 {out['client_p99_ms']:.2f} ms;"
        f" statuses {statuses}\n"
    )
    print(
        "| layer | lookups | hits | hit ratio | calls | mean ms | p50 ms (bucket ≤) | p99 ms (bucket ≤) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for layer, v in layers.items():
        ratio = "-" if v["hit_ratio"] is None else f"{v['hit_ratio']:.1%}"
        mean = "-" if v["mean_ms"] is None else f"{v['mean_ms']:.3f}"
        p50 = "-" if v["p50_le_ms"] is None else f"{v['p50_le_ms']:g}"
        p99 = "-" if v["p99_le_ms"] is None else f"{v['p99_le_ms']:g}"
        print(
            f"| {layer} | {v['hits'] + v['misses']:,.0f} | {v['hits']:,.0f} | {ratio} |"
            f" {v['calls']:,.0f} | {mean} | {p50} | {p99} |"
        )
    print(f"\nserved without PostgreSQL (L1 or L2 hits / lookups): {served_by_cache:.1%}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    post = sub.add_parser("post")
    post.add_argument("--url", required=True)
    post.add_argument("--input", default=str(FIXTURE))
    post.add_argument("--batches", type=int, default=20)
    post.add_argument("--level", type=int, default=6, help="the server's SANKOFA_GZIP_LEVEL")
    post.add_argument("--run", default="cg")
    post.add_argument("--ids", required=True)
    post.add_argument("--json")
    gets = sub.add_parser("gets")
    gets.add_argument("--url", required=True)
    gets.add_argument("--ids", required=True)
    gets.add_argument("--gets", type=int, default=30_000)
    gets.add_argument("--labels", type=int, default=100)
    gets.add_argument("--zipf", type=float, default=1.0)
    gets.add_argument("--concurrency", type=int, default=16)
    gets.add_argument("--seed", type=int, default=5, help="which ids are popular")
    gets.add_argument("--draw-seed", type=int, help="the draws (default: from --seed)")
    gets.add_argument("--json")
    args = p.parse_args()
    if args.command == "post":
        out = run_post(args)
    else:
        out = asyncio.run(get_workload(args, Path(args.ids).read_text().split()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
