"""``sankofa loadtest scenario NAME``: the measurements of docs/performance.md, each a command.

Every scenario starts its own service (``sankofa serve`` on a scratch database
and Redis prefix, benchmark endpoints on, ``--workers`` processes), drives it
with the open-model generator from this package, stops it, and writes JSON,
markdown and plots under ``--out``.

State: the online features keep each customer's last 30 days and each
terminal's last 37. A service that starts empty is cheaper per transaction
than one in steady state, and gets dearer for a month of data time (measured:
a soak's p50 went from 4.5 to 11-12.6 ms over its first six minutes while its
histories filled). So saturation, overload and soak first send
``--prefill-days`` (default 37) of the data through the batch endpoint,
unmeasured, and measure from the steady state on.

Searches: a rate is *sustained* when the service answers at least 97 % of the
offered rate, with at least the required success rate, and (where a latency
bound applies) p99 within it. The search grows the rate by half until a step
fails, then bisects between the last success and the first failure.

Scenarios:
  baselines   highest sustained rate of /bench/bare (the ceiling), /v1/transactions
              and /bench/naive, single-transaction requests, same request model
  saturation  highest rate with p99 < 50 ms on /v1/transactions, then a run at half of it
  isolation   normal and low at twice capacity plus 5 % critical, against critical alone
  batch       /v1/transactions/batch with 1000 transactions per request
  seed-table  the seed's normal / peak / stress rows: the highest compression factor
              (seed days per day) each row's success rate and latency bound hold at
  memory      a million transactions through the batch endpoint, RSS per worker
  overload    three times capacity for 60 s (--overload-seconds) beside a steady probe:
              refusals, critical, memory, and how soon latency is back to normal after
  soak        70 % of capacity for 10 minutes (--soak-seconds): errors, latency per
              minute, and the slope of each worker's RSS
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sankofa.argtypes import non_negative_float, non_negative_int, positive_float, positive_int

#: Transactions per day in the published data (1,754,155 over 183 days).
PREFILL_ROWS_PER_DAY = 9_585
SCENARIOS = ("baselines", "saturation", "isolation", "batch", "seed-table", "memory")
#: Reliability scenarios (docs/reliability.md): not part of "all".
RELIABILITY = ("overload", "soak")
DEFAULT_MIX = "critical=0.05,high=0.15,normal=0.6,low=0.2"
#: The seed documents' day table: (name, requests per day, success rate, latency bound ms).
SEED_TABLE = (
    ("normal", 2_000_000, 1.0, 30.0),
    ("peak", 8_000_000, 0.999, 80.0),
    ("stress", 10_000_000, 0.995, 150.0),
)


def add_scenario_parser(sub: Any) -> None:
    s = sub.add_parser(
        "scenario",
        help="run a measured scenario against a service it starts itself",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("name", choices=(*SCENARIOS, *RELIABILITY, "all"))
    s.add_argument(
        "--workers", type=positive_int, default=2, help="service worker processes (default 2)"
    )
    s.add_argument(
        "--duration", type=positive_float, default=10.0, help="seconds measured per step"
    )
    s.add_argument(
        "--warmup", type=non_negative_float, default=2.0, help="seconds before measuring"
    )
    s.add_argument("--out", type=Path, default=Path("loadtest-results"), help="output folder")
    s.add_argument(
        "--input", type=Path, help="handbook raw .csv.gz (default: ../shared/data or the slice)"
    )
    s.add_argument(
        "--capacity", type=positive_float, help="isolation: capacity in req/s (default: measured)"
    )
    s.add_argument(
        "--pix-every",
        type=non_negative_int,
        default=0,
        help="send every k-th transaction (by id) as a PIX, prefill included; 0 (default):"
        " all card payments, as the handbook's data has no payment type",
    )
    s.add_argument("--memory-transactions", type=positive_int, default=1_000_000)
    s.add_argument("--overload-seconds", type=positive_float, default=60.0)
    s.add_argument("--soak-seconds", type=positive_float, default=600.0)
    s.add_argument(
        "--prefill-days",
        type=non_negative_float,
        default=37.0,
        help="saturation, overload, soak: days of data sent through the batch endpoint"
        " before measuring, so feature histories are in steady state (0: start empty)",
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for the run, e.g. --set MAX_WAIT_MS=0.5 (SANKOFA_ is added)",
    )


# -- the service under test ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    """``sankofa serve`` on a scratch database and Redis prefix, on a free port."""

    workers: int
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    critical_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    database: str = field(default_factory=lambda: f"sankofa_lt_{secrets.token_hex(4)}")
    prefix: str = field(default_factory=lambda: f"lt{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def critical_url(self) -> str:
        """The critical lane's URL when there is one, else the main URL."""
        port = self.critical_port if self.critical_port is not None else self.port
        return f"http://127.0.0.1:{port}"

    def _admin_url(self) -> str:
        return (
            os.environ.get("SANKOFA_DATABASE_URL")
            or "postgresql://postgres@127.0.0.1:5432/postgres"
        )

    def _db_url(self) -> str:
        base, _, query = self._admin_url().partition("?")
        head = base.rsplit("/", 1)[0]
        return f"{head}/{self.database}" + (f"?{query}" if query else "")

    def _admin(self, sql: str) -> None:
        import asyncio

        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self._admin_url())
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def start(self) -> None:
        self._admin(f'CREATE DATABASE "{self.database}"')
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
        env.update(
            {
                "SANKOFA_DATABASE_URL": self._db_url(),
                "SANKOFA_REDIS_URL": os.environ.get(
                    "SANKOFA_REDIS_URL", "redis://127.0.0.1:6379/0"
                ),
                "SANKOFA_REDIS_PREFIX": self.prefix,
                "SANKOFA_BENCHMARK_ENDPOINTS": "true",
                "SANKOFA_LOG_LEVEL": "warning",
                "SANKOFA_WORKERS": str(self.workers),
                **(
                    {"SANKOFA_CRITICAL_PORT": str(self.critical_port)} if self.critical_port else {}
                ),
                **self.extra_env,
            }
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sankofa.cli", "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"service not ready; see {self.log_path}")

    def settle(self) -> None:
        """VACUUM ANALYZE and CHECKPOINT the service's database."""
        import asyncio

        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self._db_url())
            try:
                await conn.execute("VACUUM ANALYZE")
                try:
                    await conn.execute("CHECKPOINT")
                except asyncpg.InsufficientPrivilegeError:
                    pass  # not a superuser nor pg_checkpoint: the vacuum is most of it
            finally:
                await conn.close()

        asyncio.run(go())

    def pids(self) -> list[int]:
        """The processes serving requests (the workers, or the one process)."""
        if self.proc is None:
            return []
        import psutil

        children = psutil.Process(self.proc.pid).children(recursive=True)
        # Python children, less multiprocessing's resource tracker (it serves nothing).
        workers = [
            c.pid
            for c in children
            if "python" in c.name() and not any("resource_tracker" in a for a in c.cmdline())
        ]
        return workers or [self.proc.pid]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            _delete_prefix(self.prefix)


def _delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(os.environ.get("SANKOFA_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def _refusal_counters(service: Service) -> dict[str, float]:
    """The service's own refusal counters (door and dispatcher), from ``/metrics``.

    Summed over the workers by the multiprocess collector; a series the service
    never touched is absent. Read before the service stops, so a report says which
    class was refused and by which signal, not only that something was."""
    import httpx

    try:
        text = httpx.get(f"{service.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("sankofa_shed_total{", "sankofa_door_shed_total{")):
            name, _, value = line.rpartition(" ")
            if float(value):
                out[name] = float(value)
    return out


# -- measuring ------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    row: int = 0  # next data row, so runs never resend the same transactions

    def service(self, *, critical_lane: bool = False) -> Service:
        extra: dict[str, str] = {}
        for item in self.args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
            extra[f"SANKOFA_{name.upper().removeprefix('SANKOFA_')}"] = value
        lane = _free_port() if critical_lane else None
        return Service(
            self.args.workers, self.out / "service.log", extra_env=extra, critical_port=lane
        )

    def prefill(self, service: Service) -> dict[str, Any] | None:
        """Send --prefill-days of the data through the batch endpoint, unmeasured."""
        days = float(getattr(self.args, "prefill_days", 0.0) or 0.0)
        if days <= 0:
            return None
        per_request, rate = 200, 25.0
        rows = days * PREFILL_ROWS_PER_DAY
        print(f"prefill: {days:g} days (~{rows:,.0f} transactions), unmeasured", file=sys.stderr)
        report = self.measure(
            service,
            path="/v1/transactions/batch",
            rate=rate,
            label="prefill",
            batch=per_request,
            duration_s=max(1.0, rows / (rate * per_request) - self.args.warmup),
            mix="normal=1",
        )
        # 37 days written in about a minute leave PostgreSQL a burst of upkeep
        # (autovacuum of the new rows, a checkpoint of the dirty pages) that a
        # service writing at its real pace spreads thin; done now, it does not land
        # in the first measured minutes.
        started = time.monotonic()
        service.settle()
        print(f"prefill: settled in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return _summary(report)

    def measure(
        self,
        service: Service,
        *,
        path: str,
        rate: float,
        label: str,
        mix: str = DEFAULT_MIX,
        batch: int = 1,
        duration_s: float | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        from sankofa.load.payloads import default_input
        from sankofa.load.plan import parse_priority_mix
        from sankofa.load.report import summarise
        from sankofa.load.runner import RunSpec, run
        from sankofa.load.sampler import GroupSpec, psutil_available

        duration = self.args.duration if duration_s is None else duration_s
        groups = tuple(GroupSpec(label=f"worker {p}", pid=p) for p in service.pids())
        groups += (
            GroupSpec(label="postgres", name="postgres"),
            GroupSpec(label="redis", name="redis-server"),
        )
        spec = RunSpec(
            url=url or service.url,
            path=path,
            rate=rate,
            duration_s=duration,
            warmup_s=self.args.warmup,
            mix=parse_priority_mix(mix),
            run_id=f"lt{secrets.token_hex(4)}",
            label=label,
            batch=batch,
            input_path=self.args.input or default_input(),
            start_row=self.row,
            sample=groups if psutil_available() else (),
            sample_generator=psutil_available(),
            pix_every=int(getattr(self.args, "pix_every", 0) or 0),
        )
        data = run(spec, progress=None)
        self.row += math.ceil(rate * (duration + self.args.warmup)) * batch
        report = summarise(data)
        o = report["overall"]
        lat = o["latency_ms"]
        print(
            f"  {label}: offered {o['offered_rps']:,.0f}/s achieved {o['achieved_rps']:,.0f}/s"
            f" ({o['achieved_tps']:,.0f} tx/s) success {o['success_rate'] * 100:.2f} %"
            f" p50 {lat['p50']} p99 {lat['p99']} ms",
            file=sys.stderr,
        )
        return report


def sustained(
    report: dict[str, Any], *, min_success: float = 0.999, p99_ms: float | None = None
) -> bool:
    o = report["overall"]
    if o["achieved_rps"] < 0.97 * o["offered_rps"] or o["success_rate"] < min_success:
        return False
    p99 = o["latency_ms"]["p99"]
    bound = 1000.0 if p99_ms is None else p99_ms  # beyond a second the queue is growing
    return p99 is not None and p99 <= bound


def search(
    measure_at: Callable[[float], dict[str, Any]],
    ok: Callable[[dict[str, Any]], bool],
    start: float,
    *,
    grow: float = 1.5,
    bisect_steps: int = 4,
    max_steps: int = 14,
) -> tuple[float, dict[str, Any] | None, list[tuple[float, dict[str, Any]]]]:
    """Highest sustained rate: grow by half until a failure, then bisect."""
    trials: list[tuple[float, dict[str, Any]]] = []
    best, best_report, low, high = 0.0, None, 0.0, None
    rate = start
    while high is None and len(trials) < max_steps:
        report = measure_at(rate)
        trials.append((rate, report))
        if ok(report):
            best, best_report, low = rate, report, rate
            rate *= grow
        else:
            high = rate
    for _ in range(bisect_steps):
        if high is None or high - low < 0.03 * high:
            break
        rate = (low + high) / 2 if low > 0 else high / 2
        report = measure_at(rate)
        trials.append((rate, report))
        if ok(report):
            best, best_report, low = rate, report, rate
        else:
            high = rate
    return best, best_report, trials


def _summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    o = report["overall"]
    return {
        "offered_rps": o["offered_rps"],
        "achieved_rps": o["achieved_rps"],
        "achieved_tps": o["achieved_tps"],
        "success_rate": o["success_rate"],
        "latency_ms": o["latency_ms"],
        "errors_by_status": o["errors_by_status"],
        "by_priority": {p: v.get("latency_ms") for p, v in report["by_priority"].items()},
        "resources": {
            name: {"cpu_pct_mean": g["cpu_pct"]["mean"], "rss_mb_max": g["rss_mb"]["max"]}
            for name, g in report.get("resources", {}).items()
            if isinstance(g, dict) and g.get("cpu_pct")
        },
    }


def _curve(trials: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"rate": r, **(_summary(rep) or {})} for r, rep in sorted(trials, key=lambda t: t[0])]


# -- scenarios ----------------------------------------------------------------------------


def scenario_baselines(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    starts = {"/bench/bare": 2000.0, "/v1/transactions": 1000.0, "/bench/naive": 300.0}
    for path, start in starts.items():
        service = ctx.service()
        service.start()
        try:
            print(f"baselines: {path}", file=sys.stderr)
            best, report, trials = search(
                _measure_path(ctx, service, path, path.strip("/").replace("/", "-")),
                sustained,
                start,
            )
        finally:
            service.stop()
        out[path] = {"max_sustained_rps": best, "at_max": _summary(report), "curve": _curve(trials)}
    full = out["/v1/transactions"]["max_sustained_rps"]
    out["ratios"] = {
        "full_over_bare": full / out["/bench/bare"]["max_sustained_rps"]
        if out["/bench/bare"]["max_sustained_rps"]
        else None,
        "full_over_naive": full / out["/bench/naive"]["max_sustained_rps"]
        if out["/bench/naive"]["max_sustained_rps"]
        else None,
    }
    return out


def scenario_saturation(ctx: Context) -> dict[str, Any]:
    service = ctx.service()
    service.start()
    try:
        prefill = ctx.prefill(service)
        print("saturation: /v1/transactions, p99 < 50 ms", file=sys.stderr)
        best, report, trials = search(
            lambda r: ctx.measure(service, path="/v1/transactions", rate=r, label=f"sat-{r:.0f}"),
            lambda rep: sustained(rep, p99_ms=50.0),
            1000.0,
        )
        half = (
            ctx.measure(
                service,
                path="/v1/transactions",
                rate=best / 2,
                label="half-saturation",
                duration_s=max(ctx.args.duration, 20.0),
            )
            if best
            else None
        )
    finally:
        service.stop()
    return {
        "prefill": prefill,
        "max_rps_p99_under_50ms": best,
        "at_max": _summary(report),
        "half_rate": _summary(half),
        "curve": _curve(trials),
    }


def scenario_isolation(ctx: Context, capacity: float | None = None) -> dict[str, Any]:
    """Critical traffic from its own client (as an authorisation system has its own
    connection pool) while a second client floods normal and low at twice capacity:
    the service must keep critical fast and shed the flood, lowest class first.
    Measured twice: everything on one port, and critical on the critical lane."""
    if capacity is None:
        capacity = ctx.args.capacity or scenario_saturation(ctx)["max_rps_p99_under_50ms"]
    assert capacity
    return {
        "shared_port": _isolation(ctx, capacity, critical_lane=False),
        "critical_lane": _isolation(ctx, capacity, critical_lane=True),
    }


def _isolation(ctx: Context, capacity: float, *, critical_lane: bool) -> dict[str, Any]:
    service = ctx.service(critical_lane=critical_lane)
    service.start()
    try:
        critical_rate = 0.05 * 2 * capacity
        print(
            f"isolation: capacity {capacity:.0f} req/s; critical alone at {critical_rate:.0f}",
            file=sys.stderr,
        )
        lane = "lane" if critical_lane else "shared"
        idle = ctx.measure(
            service,
            path="/v1/transactions",
            rate=critical_rate,
            label=f"critical-alone-{lane}",
            mix="critical=1",
            url=service.critical_url,
        )
        flood_label = f"flood-normal-low-{lane}"
        flood_s = ctx.args.duration + 2 * ctx.args.warmup + 4
        flood = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sankofa.cli",
                "loadtest",
                "run",
                "--url",
                service.url,
                "--rate",
                f"{2 * capacity:.0f}",
                "--duration",
                f"{flood_s:g}",
                "--priority-mix",
                "normal=0.5,low=0.5",
                "--start-row",
                str(ctx.row + 5_000_000),
                "--out",
                str(ctx.out),
                "--label",
                flood_label,
                "--no-plots",
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(ctx.args.warmup + 2)  # let the flood reach its rate first
            loaded = ctx.measure(
                service,
                path="/v1/transactions",
                rate=critical_rate,
                label=f"critical-under-flood-{lane}",
                mix="critical=1",
                url=service.critical_url,
            )
        finally:
            flood.wait(timeout=flood_s + 120)
    finally:
        service.stop()
    flood_report = json.loads((ctx.out / f"{flood_label}.json").read_text())
    crit_idle = idle["overall"]["latency_ms"]["p99"]
    crit_loaded = loaded["overall"]["latency_ms"]["p99"]
    return {
        "capacity_rps": capacity,
        "critical_rps": critical_rate,
        "flood_rps": 2 * capacity,
        "critical_alone": _summary(idle),
        "critical_under_flood": _summary(loaded),
        "critical_p99_ratio": (crit_loaded / crit_idle) if crit_idle else None,
        "critical_errors": loaded["overall"]["errors"],
        "flood": {
            p: {
                "sent": v["requests"],
                "ok": v["ok"],
                "errors_by_status": v["errors_by_status"],
                "latency_ms": v["latency_ms"],
            }
            for p, v in flood_report["by_priority"].items()
        },
        "flood_retry_after": flood_report.get("retry_after"),
    }


def scenario_batch(ctx: Context) -> dict[str, Any]:
    service = ctx.service()
    service.start()
    try:
        print("batch: 1000 transactions per request", file=sys.stderr)
        best, report, trials = search(
            lambda r: ctx.measure(
                service, path="/v1/transactions/batch", rate=r, batch=1000, label=f"batch-{r:.1f}"
            ),
            sustained,
            5.0,
        )
    finally:
        service.stop()
    return {
        "max_requests_per_s": best,
        "max_tx_per_s": best * 1000,
        "at_max": _summary(report),
        "curve": _curve(trials),
    }


def _measure_path(
    ctx: Context, service: Service, path: str, prefix: str
) -> Callable[[float], dict[str, Any]]:
    def at(rate: float) -> dict[str, Any]:
        return ctx.measure(service, path=path, rate=rate, label=f"{prefix}-{rate:.0f}")

    return at


def _bounded(success: float, bound_ms: float) -> Callable[[dict[str, Any]], bool]:
    def ok(report: dict[str, Any]) -> bool:
        return sustained(report, min_success=success, p99_ms=bound_ms)

    return ok


def scenario_seed_table(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    service = ctx.service()
    service.start()
    try:
        for name, per_day, success, bound in SEED_TABLE:
            print(
                f"seed-table: {name} ({per_day:,}/day, {success * 100:g} %, < {bound:g} ms)",
                file=sys.stderr,
            )
            base = per_day / 86_400
            best, report, trials = search(
                _measure_path(ctx, service, "/v1/transactions", name),
                _bounded(success, bound),
                base * 10,
            )
            out[name] = {
                "seed_per_day": per_day,
                "seed_rps": base,
                "success_required": success,
                "p99_bound_ms": bound,
                "max_rps": best,
                "compression_factor": best / base,
                "at_max": _summary(report),
                "curve": _curve(trials),
            }
    finally:
        service.stop()
    return out


def scenario_memory(ctx: Context) -> dict[str, Any]:
    n = ctx.args.memory_transactions
    service = ctx.service()
    service.start()
    try:
        import psutil

        # 8 requests of 1000 a second: about 70 % of the batch endpoint's sustained rate
        # here (11 a second, scenario "batch"), so that every transaction is taken.
        rate = 8.0
        duration = n / (rate * 1000)
        print(f"memory: {n:,} transactions through the batch endpoint", file=sys.stderr)
        before = {p: psutil.Process(p).memory_info().rss / 2**20 for p in service.pids()}
        report = ctx.measure(
            service,
            path="/v1/transactions/batch",
            rate=rate,
            batch=1000,
            label="memory",
            duration_s=duration,
        )
        after = {p: psutil.Process(p).memory_info().rss / 2**20 for p in service.pids()}
    finally:
        service.stop()
    return {
        "transactions": report["overall"]["ok"] * 1000,
        "rss_mb_before": before,
        "rss_mb_after": after,
        "run": _summary(report),
    }


def _capacity(ctx: Context) -> float:
    capacity: float | None = ctx.args.capacity
    if not capacity:
        capacity = scenario_saturation(ctx)["max_rps_p99_under_50ms"]
    if not capacity:
        raise SystemExit("no sustained rate found: cannot size the load")
    return float(capacity)


def _rss_slope_mb_per_min(series: list[list[float]], skip_s: float) -> float | None:
    """Least-squares slope of RSS (MB) against time, after the first ``skip_s``."""
    import numpy as np

    pts = np.asarray([(t, rss) for t, _, rss in series if t >= skip_s], dtype=np.float64)
    if pts.shape[0] < 3:
        return None
    slope = float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0])
    return round(slope * 60.0, 3)


def _workers_rss(report: dict[str, Any]) -> dict[str, Any]:
    return {
        name: g
        for name, g in report.get("resources", {}).items()
        if name.startswith("worker") and isinstance(g, dict) and g.get("series")
    }


def scenario_overload(ctx: Context) -> dict[str, Any]:
    """A steady probe at a third of capacity runs throughout: alone first (its latency
    then is "normal"), beside a flood at three times capacity for --overload-seconds,
    then alone again. The flood's refusals must be 503/504 with Retry-After; the probe
    says whether critical kept being served and how soon latency was normal again."""
    capacity = _capacity(ctx)
    flood_s = ctx.args.overload_seconds
    before_s, after_s = 15.0, 20.0
    probe_rate = capacity / 3
    service = ctx.service()
    service.start()
    try:
        prefill = ctx.prefill(service)
        print(
            f"overload: capacity {capacity:.0f} req/s; flood {3 * capacity:.0f} req/s for"
            f" {flood_s:g} s beside a probe at {probe_rate:.0f} req/s",
            file=sys.stderr,
        )
        flood_label = "overload-flood"
        flood: subprocess.Popen[bytes] | None = None

        def start_flood() -> None:
            nonlocal flood
            flood = subprocess.Popen(
                [
                    sys.executable, "-m", "sankofa.cli", "loadtest", "run",
                    "--url", service.url,
                    "--rate", f"{3 * capacity:.0f}",
                    "--duration", f"{flood_s:g}",
                    "--warmup", "0",
                    "--priority-mix", DEFAULT_MIX,
                    "--start-row", str(ctx.row + 5_000_000),
                    "--out", str(ctx.out),
                    "--label", flood_label,
                    "--no-plots", "--quiet",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip

        import threading

        # The probe runs in this thread (the generator wants the main thread); the
        # flood starts from a timer once the probe has measured "normal" for a while.
        probe_s = before_s + flood_s + after_s + 10.0
        timer = threading.Timer(ctx.args.warmup + before_s + 5.0, start_flood)
        timer.start()
        try:
            probe_out = ctx.measure(
                service,
                path="/v1/transactions",
                rate=probe_rate,
                label="overload-probe",
                duration_s=probe_s,
            )
        finally:
            timer.cancel()
            timer.join()
        if flood is None:
            raise RuntimeError("the flood never started")
        flood.wait(timeout=flood_s + 300)
        alive = service.proc is not None and service.proc.poll() is None
        import httpx

        live = httpx.get(f"{service.url}/health/live", timeout=5).status_code if alive else None
        refusals = _refusal_counters(service) if alive else {}
    finally:
        service.stop()
    flood_report = json.loads((ctx.out / f"{flood_label}.json").read_text())
    result = _overload_result(capacity, probe_out, flood_report, alive=alive, live_status=live)
    return {"prefill": prefill, **result, "service_refusals": refusals}


def _overload_result(
    capacity: float,
    probe: dict[str, Any],
    flood: dict[str, Any],
    *,
    alive: bool,
    live_status: int | None,
) -> dict[str, Any]:
    # The flood's window on the probe's clock (seconds from the probe's start instant).
    flood_from = flood["started_at_unix"] - probe["started_at_unix"]
    flood_to = flood_from + flood["config"]["duration_s"]
    rows = probe["timeseries"]
    before = [r for i, r in enumerate(rows) if probe["config"]["warmup_s"] <= i < flood_from - 1]
    during = [r for i, r in enumerate(rows) if flood_from + 1 <= i < flood_to]
    after = [(i, r) for i, r in enumerate(rows) if i >= flood_to]
    before_p99 = sorted(r["p99_ms"] for r in before if r["p99_ms"] is not None)
    normal_p99 = before_p99[len(before_p99) // 2] if before_p99 else None
    # Back to normal: the first second after the flood that starts five seconds in a row
    # whose p99 is within twice the typical second before it (the median second's p99).
    recovered_after_s: float | None = None
    if normal_p99 is not None and after:
        bound = 2 * normal_p99
        for k, (i, _) in enumerate(after):
            window = [r for _, r in after[k : k + 5] if r["completed"]]
            if len(window) == 5 and all(
                r["p99_ms"] is not None and r["p99_ms"] <= bound for r in window
            ):
                recovered_after_s = round(max(0.0, i - flood_to), 1)
                break
    crit_during = [r["by_priority"].get("critical", {}) for r in during]
    flood_errors = flood["overall"]["errors_by_status"]
    workers = _workers_rss(probe)
    return {
        "capacity_rps": capacity,
        "flood_rps": 3 * capacity,
        "flood_seconds": flood["config"]["duration_s"],
        "probe_rps": probe["config"]["rate"],
        "service_alive_after": alive,
        "health_live_after": live_status,
        "flood": {
            "sent": flood["overall"]["requests"],
            "ok": flood["overall"]["ok"],
            "errors_by_status": flood_errors,
            "refusals_without_retry_after": sum(
                v["without"] for v in flood["retry_after"].values()
            ),
            "retry_after": flood["retry_after"],
            "by_priority": {
                p: {
                    "sent": v["requests"],
                    "ok": v["ok"],
                    "errors_by_status": v["errors_by_status"],
                    "latency_ms": v["latency_ms"],
                }
                for p, v in flood["by_priority"].items()
            },
        },
        "probe": _summary(probe),
        "probe_errors_by_status": probe["overall"]["errors_by_status"],
        "probe_critical_ok_during_flood": sum(c.get("ok", 0) for c in crit_during),
        "normal_p99_ms": normal_p99,
        "normal_definition": "median of the probe's per-second p99 before the flood; back to"
        " normal = five seconds in a row at most twice that",
        "recovered_after_s": recovered_after_s,
        "worker_rss_mb_max": {n: g["rss_mb"]["max"] for n, g in workers.items()},
        "worker_rss_mb_mean": {n: g["rss_mb"]["mean"] for n, g in workers.items()},
        "timeline": [
            {"s": i, "p99_ms": r["p99_ms"], "ok": r["ok"], "errors": r["errors"]}
            for i, r in enumerate(rows)
        ],
        "flood_window_s": [round(flood_from, 2), round(flood_to, 2)],
    }


def scenario_soak(ctx: Context) -> dict[str, Any]:
    """70 % of capacity for --soak-seconds: no error, latency per minute, RSS slope."""
    capacity = _capacity(ctx)
    rate = 0.7 * capacity
    seconds = ctx.args.soak_seconds
    service = ctx.service()
    service.start()
    try:
        prefill = ctx.prefill(service)
        print(f"soak: {rate:.0f} req/s for {seconds:g} s", file=sys.stderr)
        report = ctx.measure(
            service, path="/v1/transactions", rate=rate, label="soak", duration_s=seconds
        )
        refusals = _refusal_counters(service)
    finally:
        service.stop()
    rows = report["timeseries"]
    warm = int(report["config"]["warmup_s"])
    minutes = []
    for m in range(0, max(1, (len(rows) - warm) // 60)):
        chunk = [r for r in rows[warm + 60 * m : warm + 60 * (m + 1)] if r["p99_ms"] is not None]
        if chunk:
            minutes.append(
                {
                    "minute": m + 1,
                    "ok": sum(r["ok"] for r in chunk),
                    "errors": sum(r["errors"] for r in chunk),
                    "p99_ms_worst_second": max(r["p99_ms"] for r in chunk),
                    "p50_ms_median_second": sorted(r["p50_ms"] for r in chunk)[len(chunk) // 2],
                }
            )
    workers = _workers_rss(report)
    return {
        "capacity_rps": capacity,
        "rate_rps": rate,
        "seconds": seconds,
        "prefill": prefill,
        "run": _summary(report),
        "errors": report["overall"]["errors"],
        "errors_by_status": report["overall"]["errors_by_status"],
        "service_refusals": refusals,
        "per_minute": minutes,
        # After the first minute (warm-up: caches, pools, the allocator's arenas).
        "worker_rss_slope_mb_per_min": {
            n: _rss_slope_mb_per_min(g["series"], warm + 60.0) for n, g in workers.items()
        },
        "worker_rss_mb": {
            n: {"mean": g["rss_mb"]["mean"], "max": g["rss_mb"]["max"]} for n, g in workers.items()
        },
        "rss_series": {n: g["series"] for n, g in workers.items()},
    }


def run_scenario(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, args.out)
    names = SCENARIOS if args.name == "all" else (args.name,)
    results: dict[str, Any] = {}
    for name in names:
        started = time.time()
        if name == "baselines":
            result = scenario_baselines(ctx)
        elif name == "saturation":
            result = scenario_saturation(ctx)
        elif name == "isolation":
            capacity = results.get("saturation", {}).get("max_rps_p99_under_50ms")
            result = scenario_isolation(ctx, capacity)
        elif name == "batch":
            result = scenario_batch(ctx)
        elif name == "seed-table":
            result = scenario_seed_table(ctx)
        elif name == "overload":
            result = scenario_overload(ctx)
        elif name == "soak":
            result = scenario_soak(ctx)
        else:
            result = scenario_memory(ctx)
        result["seconds"] = round(time.time() - started, 1)
        result["workers"] = args.workers
        result["command"] = (
            f"sankofa loadtest scenario {name} --workers {args.workers} --duration {args.duration:g}"
            + (f" --pix-every {args.pix_every}" if args.pix_every else "")
        )
        result["pix_every"] = args.pix_every
        results[name] = result
        path = args.out / f"scenario-{name}.json"
        path.write_text(json.dumps(result, indent=2, default=_json_default))
        print(f"wrote {path}", file=sys.stderr)
        _plot(name, result, args.out)
    return 0


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _plot(name: str, result: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    special = {"overload": _plot_overload, "soak": _plot_soak, "isolation": _plot_isolation}
    if name in special:
        fig = special[name](plt, result)
        fig.tight_layout()
        fig.savefig(out / f"scenario-{name}.png", dpi=110)
        plt.close(fig)
        return
    curves: dict[str, list[dict[str, Any]]] = {}
    if name == "baselines":
        curves = {
            p: result[p]["curve"] for p in ("/bench/bare", "/v1/transactions", "/bench/naive")
        }
    elif name in ("saturation", "batch"):
        curves = {name: result["curve"]}
    elif name == "seed-table":
        curves = {row: result[row]["curve"] for row in ("normal", "peak", "stress")}
    if not curves:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in curves.items():
        pts = sorted(
            (c for c in curve if c.get("latency_ms") and c["latency_ms"].get("p99") is not None),
            key=lambda c: c["rate"],
        )
        if not pts:
            continue
        x = [c["rate"] for c in pts]
        ax1.plot(x, [c["achieved_rps"] for c in pts], marker="o", label=label)
        ax2.plot(x, [c["latency_ms"]["p99"] for c in pts], marker="o", label=f"{label} p99")
        ax2.plot(
            x,
            [c["latency_ms"]["p50"] for c in pts],
            marker=".",
            linestyle="--",
            label=f"{label} p50",
        )
    ax1.set_xlabel("offered requests/s")
    ax1.set_ylabel("answered requests/s")
    ax1.set_title(f"{name}: throughput")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("offered requests/s")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_yscale("log")
    ax2.set_title(f"{name}: latency")
    ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / f"scenario-{name}.png", dpi=110)
    plt.close(fig)


def _plot_overload(plt: Any, result: dict[str, Any]) -> Any:
    """The probe, second by second, with the flood's window shaded."""
    rows = result["timeline"]
    t = [r["s"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(t, [r["p99_ms"] for r in rows], color="#aa3377", label="probe p99 per second")
    ax1.axhline(result["normal_p99_ms"], color="grey", linestyle=":", label="normal (before)")
    ax1.set_yscale("log")
    ax1.set_ylabel("ms (log)")
    ax1.legend(fontsize=7)
    ax2.plot(t, [r["ok"] for r in rows], color="#228833", label="probe 200 per second")
    ax2.plot(t, [r["errors"] for r in rows], color="#ee6677", label="probe 503/504 per second")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("requests")
    ax2.legend(fontsize=7)
    start, end = result["flood_window_s"]
    for ax in (ax1, ax2):
        ax.axvspan(start, end, color="#ffcc99", alpha=0.35)
    ax1.set_title(
        f"overload: {result['flood_rps']:,.0f} req/s for {result['flood_seconds']:g} s "
        f"(3 x capacity, shaded) beside a {result['probe_rps']:,.0f} req/s probe"
    )
    return fig


def _plot_soak(plt: Any, result: dict[str, Any]) -> Any:
    """Latency per minute and every worker's RSS over the soak."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    minutes = result["per_minute"]
    m = [r["minute"] for r in minutes]
    ax1.plot(m, [r["p50_ms_median_second"] for r in minutes], marker="o", label="p50 (median s)")
    ax1.plot(m, [r["p99_ms_worst_second"] for r in minutes], marker="o", label="p99 (worst s)")
    ax1.set_xlabel("minute")
    ax1.set_ylabel("ms (log)")
    ax1.set_yscale("log")
    ax1.set_title(f"soak at {result['rate_rps']:,.0f} req/s: latency per minute")
    ax1.legend(fontsize=7)
    for worker, series in result["rss_series"].items():
        ax2.plot([p[0] / 60 for p in series], [p[2] for p in series], label=worker)
    ax2.set_xlabel("minute")
    ax2.set_ylabel("RSS MB")
    ax2.set_ylim(bottom=0)
    ax2.set_title("RSS per worker")
    ax2.legend(fontsize=7)
    return fig


def _plot_isolation(plt: Any, result: dict[str, Any]) -> Any:
    """Critical p50 / p99 alone and under the flood, on the shared port and the lane."""
    fig, ax = plt.subplots(figsize=(8, 4))
    labels, p50, p99 = [], [], []
    for key, name in (("shared_port", "shared port"), ("critical_lane", "critical lane")):
        if key not in result:
            continue
        for run, what in (("critical_alone", "alone"), ("critical_under_flood", "under flood")):
            lat = result[key][run]["latency_ms"]
            labels.append(f"{name}\n{what}")
            p50.append(lat["p50"])
            p99.append(lat["p99"])
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("critical latency ms")
    ax.set_title("priority isolation: critical alone and beside normal + low at 2 x capacity")
    ax.legend(fontsize=7)
    return fig
