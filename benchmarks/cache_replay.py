"""The layered cache during a replay of the published data with rules and lists.

Against a running ``sankofa serve`` (a scratch database and Redis prefix):

1. configures it over the admin API: the sample rule set
   (``sankofa.rules.examples``: ten active, five shadow), every 50th terminal of
   the data on the hot list, every 50th customer on the allow list, every
   100th customer with limits of their own;
2. replays ``--days`` of the data from ``--from`` with ``sankofa replay``
   (labels included);
3. reads the cache's own series from ``/metrics`` before and after, and prints,
   per cache and layer, the keys looked up, the hit ratio and the mean time of
   one call (a batch of keys), as JSON.

    createdb -h 127.0.0.1 -U postgres cachereplay
    SANKOFA_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/cachereplay \\
    SANKOFA_REDIS_URL=redis://127.0.0.1:6379/0 SANKOFA_REDIS_PREFIX=cr1 \\
      .venv/bin/sankofa serve --port 8766 --workers 2 &
    .venv/bin/python benchmarks/cache_replay.py --url http://127.0.0.1:8766 \\
      --input ../shared/data/handbook-raw.csv.gz --from 2018-04-01 --days 14
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections import defaultdict
from typing import Any

import httpx

from sankofa.cli import main as sankofa
from sankofa.rules.examples import SAMPLE_RULES

_SAMPLE = re.compile(r"^(sankofa_cache_\w+)\{([^}]*)\} ([0-9.eE+-]+)$")


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = defaultdict(float)
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(tuple(kv.split("=", 1)) for kv in m.group(2).split(","))
            labels = frozenset((k, v.strip('"')) for k, v in labels)
            out[(m.group(1), labels)] += float(m.group(3))
    return out


def configure(url: str, terminals: int, customers: int) -> dict[str, int]:
    with httpx.Client(base_url=url, timeout=30) as c:
        for k, (rule_id, action, mode, expression) in enumerate(SAMPLE_RULES):
            r = c.post(
                "/v1/rules",
                json={
                    "id": rule_id,
                    "action": action,
                    "priority": 10 * k,
                    "mode": mode,
                    "expression": expression,
                },
            )
            assert r.status_code in (201, 409), r.text
        hot = [str(t) for t in range(0, terminals, 50)]
        allow = [str(c_) for c_ in range(0, customers, 50)]
        limited = [str(c_) for c_ in range(7, customers, 100)]
        for v in hot:
            c.post("/v1/lists/hot/terminals", json={"value": v, "reason": "bench"})
        for v in allow:
            c.post("/v1/lists/allow/customers", json={"value": v, "reason": "bench"})
        for v in limited:
            c.put(f"/v1/limits/customers/{v}", json={"night_pix_limit": "500.00"})
    return {
        "rules": len(SAMPLE_RULES),
        "hot_terminals": len(hot),
        "allowed_customers": len(allow),
        "customers_with_limits": len(limited),
    }


def summarise(before: Any, after: Any) -> dict[str, Any]:
    def delta(name: str, **want: str) -> float:
        total = 0.0
        for (n, labels), v in after.items():
            if n == name and all((k, w) in labels for k, w in want.items()):
                total += v - before.get((n, labels), 0.0)
        return total

    caches = {dict(labels).get("cache") for (n, labels) in after if n.startswith("sankofa_cache")}
    out: dict[str, Any] = {}
    for cache in sorted(c for c in caches if c):
        layers: dict[str, Any] = {}
        for layer in ("l1", "l2", "l3"):
            hit = delta("sankofa_cache_lookups_total", cache=cache, layer=layer, result="hit")
            miss = delta("sankofa_cache_lookups_total", cache=cache, layer=layer, result="miss")
            calls = delta("sankofa_cache_latency_seconds_count", cache=cache, layer=layer)
            secs = delta("sankofa_cache_latency_seconds_sum", cache=cache, layer=layer)
            layers[layer] = {
                "keys": int(hit + miss),
                "hits": int(hit),
                "hit_ratio": round(hit / (hit + miss), 4) if hit + miss else None,
                "calls": int(calls),
                "mean_call_ms": round(1000 * secs / calls, 3) if calls else None,
            }
        failures = delta("sankofa_cache_failures_total", cache=cache)
        out[cache] = {"layers": layers, "failures": int(failures)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--from", dest="date_from", default="2018-04-01")
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--out", default=None, help="write the JSON here too")
    a = p.parse_args()
    configured = configure(a.url, terminals=10_000, customers=5_000)
    before = metrics(a.url)
    last = dt.date.fromisoformat(a.date_from) + dt.timedelta(days=a.days - 1)
    code = sankofa(
        [
            "replay", "--input", a.input, "--url", a.url, "--from", a.date_from,
            "--to", last.isoformat(), "--batch", "200", "--concurrency", "4",
        ]
    )  # fmt: skip
    after = metrics(a.url)
    result = {
        "command": " ".join(sys.argv),
        "configured": configured,
        "replay_exit": code,
        "days": [a.date_from, last.isoformat()],
        "cache": summarise(before, after),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
