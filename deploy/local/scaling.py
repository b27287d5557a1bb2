"""Throughput of 1, 2 and 4 instances behind nginx on this machine, with where
the CPU goes: for each instance count, a fresh native cluster
(sankofa_cluster.py), then `sankofa loadtest run` through nginx at each offered
rate, sampling the CPU of the instances, nginx, PostgreSQL, Redis and the
generator. Writes one JSON with every run's summary and prints a markdown
table (docs/scaling.md).

    python deploy/local/scaling.py [--instances 1,2,4] [--rates 200,400,800]
        [--duration 10] [--redis single|cluster|single,cluster]
        [--out docs/results/scaling.json]

``--redis``: one plain Redis (the default, as the figures in docs/scaling.md
were first measured), a 3-master Redis Cluster (SANKOFA_REDIS_CLUSTER), or
both, one after the other.

Plain HTTP to nginx (the load generator has no TLS; sankofa_cluster.py gives
the TLS server a plain loopback port for it). Sampling by process name takes
every process of that name on the machine: other PostgreSQL or Redis servers
running beside it are counted too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import sankofa_cluster


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def one_run(
    cluster: sankofa_cluster.LocalCluster, rate: int, duration_s: float, out: Path, label: str
) -> dict[str, Any]:
    cmd = [
        cluster.python, "-m", "sankofa.cli", "loadtest", "run",
        "--url", cluster.plain_url, "--rate", str(rate), "--duration", str(duration_s),
        "--warmup", "2", "--out", str(out), "--label", label, "--no-plots", "--quiet",
        "--sample-process-name", "nginx", "--sample-process-name", "postgres",
        "--sample-process-name", "redis-server",
    ]  # fmt: skip
    for inst in cluster.instances:
        cmd += ["--server-pid", str(inst.process.pid)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=duration_s + 120)
    report: dict[str, Any] = json.loads((out / f"{label}.json").read_text())
    return report


def psql(cluster: sankofa_cluster.LocalCluster, sql: str) -> str:
    bindir = sankofa_cluster.postgres_bindir()
    cmd = [f"{bindir}/psql", cluster.database_url, "-qAt", "-c", sql]
    return subprocess.run(
        cmd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def wal_lsn(cluster: sankofa_cluster.LocalCluster) -> str:
    return psql(cluster, "SELECT pg_current_wal_lsn()")


def storage(cluster: sankofa_cluster.LocalCluster, since_lsn: str, ok: int) -> dict[str, Any]:
    """WAL written per answered transaction since ``since_lsn``, and the tables'
    size (indexes included) per stored transaction: for the 10x / 100x arithmetic."""
    wal = float(psql(cluster, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{since_lsn}')"))
    rows = int(psql(cluster, "SELECT count(*) FROM transactions"))
    size = int(
        psql(
            cluster,
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
    )
    return {
        "wal_bytes_per_tx": round(wal / ok) if ok else None,
        "table_bytes_per_stored_tx": round(size / rows) if rows else None,
        "stored_transactions": rows,
    }


def summary(n: int, report: dict[str, Any], machine_cpu: float) -> dict[str, Any]:
    """The figures docs/scaling.md shows, from a loadtest report."""
    overall = report["overall"]
    cpu: dict[str, float] = {}
    for label, group in report.get("resources", {}).items():
        key = "instances" if label.startswith("server pid") else label
        cpu[key] = round(cpu.get(key, 0.0) + float(group["cpu_pct"]["mean"] or 0.0), 1)
    return {
        "instances": n,
        "offered_rps": overall["offered_rps"],
        "achieved_rps": overall["achieved_rps"],
        "success_rate": overall["success_rate"],
        "errors_by_status": overall["errors_by_status"],
        "errors_by_kind": overall["errors_by_kind"],
        "latency_ms": overall["latency_ms"],
        "cpu_percent_mean": cpu,
        # CPU time per answered request, by part: what adding load would cost.
        "cpu_ms_per_request": {
            k: round(10.0 * v / overall["achieved_rps"], 3) if overall["achieved_rps"] else None
            for k, v in cpu.items()
        },
        # Everything on the machine, ours or not (200 % = both cores).
        "machine_cpu_percent": round(machine_cpu, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = ("instances", "nginx", "postgres", "redis-server", "generator")
    lines = [
        "| redis | instances | offered req/s | achieved req/s | success | p50 ms | p99 ms | CPU %: "
        + " / ".join(cols)
        + " | machine CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        cpu = " / ".join(f"{r['cpu_percent_mean'].get(c, 0):.0f}" for c in cols)
        lines.append(
            f"| {r.get('redis', 'single')} | {r['instances']} | {r['offered_rps']:.0f} | {r['achieved_rps']:.0f} |"
            f" {100 * r['success_rate']:.2f} % | {r['latency_ms']['p50']:.1f} |"
            f" {r['latency_ms']['p99']:.1f} | {cpu} | {r['machine_cpu_percent']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=_ints, default=[1, 2, 4])
    p.add_argument("--rates", type=_ints, default=[200, 400, 800])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("docs/results/scaling.json"))
    p.add_argument(
        "--redis",
        type=lambda t: [x for x in t.split(",") if x],
        default=["single"],
        help="single, cluster or single,cluster",
    )
    args = p.parse_args(argv)
    if not set(args.redis) <= {"single", "cluster"}:
        p.error("--redis takes single, cluster or both")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sankofa-scaling-") as tmp:
        for kind, n in [(k, n) for k in args.redis for n in args.instances]:
            with sankofa_cluster.LocalCluster(
                Path(tmp) / f"cluster-{kind}-{n}",
                instances_count=n,
                redis_cluster_replicas=0 if kind == "cluster" else None,
            ) as c:
                for rate in args.rates:
                    label = f"{kind}-n{n}-r{rate}"
                    before = psutil.cpu_times()
                    lsn = wal_lsn(c)
                    report = one_run(c, rate, args.duration, Path(tmp) / "reports", label)
                    after = psutil.cpu_times()
                    # Warm-up requests are stored too: count every ok answer.
                    ok = report["overall"]["ok"] + report["warmup"]["ok"]
                    busy = sum(after) - sum(before) - (after.idle - before.idle)
                    busy -= getattr(after, "iowait", 0) - getattr(before, "iowait", 0)
                    wall = sum(after) - sum(before)
                    machine = 100.0 * psutil.cpu_count() * busy / wall if wall else 0.0
                    runs.append(
                        {"redis": kind, **summary(n, report, machine), **storage(c, lsn, ok)}
                    )
                    print(f"{label} done", file=sys.stderr, flush=True)
                    time.sleep(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python deploy/local/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.write_text(json.dumps({"command": command.strip(), "runs": runs}, indent=1) + "\n")
    print(table(runs))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
