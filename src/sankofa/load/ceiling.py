"""``sankofa loadtest ceiling``: how fast the generator itself can go, beside wrk.

Against a trivial server (its own process, loopback, a fixed 200 answer):

1. the generator's closed-loop maximum (every connection busy all the time);
2. an open-model sweep at fractions of that maximum: the highest rate it
   sustains (>= 99 % of the offered rate answered in time, no errors, and the
   dispatcher no more than 5 ms late at p99 of its wake-ups);
3. wrk, closed loop, same connections, same request bytes (threads = our
   processes);
4. the client's CPU per request beside httpx's, both in this process on the
   same loop, against the same server.

Both generators share the two cores with the trivial server, whose CPU is
sampled: when it is near 100 % of a core, the figure is the server's limit,
not the generator's. A load test whose rate is well below the sustained
open-model maximum is not limited by the generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sankofa.load import _loop
from sankofa.load.engine import ClosedLoop
from sankofa.load.errors import LoadTestError
from sankofa.load.http import Connection, HttpClient, Target, build_request
from sankofa.load.plan import parse_priority_mix
from sankofa.load.report import summarise
from sankofa.load.runner import RunSpec, run
from sankofa.load.sampler import GroupSpec, ResourceSampler, psutil_available
from sankofa.load.wrk import run_wrk, wrk_path

#: What "sustained" means in the open-model sweep. Latency is reported but is
#: not part of it: on two shared cores it is mostly the trivial server's and
#: the scheduler's, while these two say whether the generator kept its schedule.
SUSTAINED_FRACTION = 0.99
SUSTAINED_LATENESS_P99_MS = 5.0
_HEADERS = {"Content-Type": "application/json", "X-Priority": "normal"}
#: A scoring request's body when no data file is at hand (same shape and size).
_FALLBACK_BODY = (
    b'{"transaction_id":"ltdeadbeef-1000000","timestamp":"2018-04-01T00:00:31-03:00",'
    b'"amount":"57.16","customer_id":"596","terminal_id":"3156","type":"card"}'
)


def sample_body(input_path: Path | None) -> bytes:
    """The first transaction of the data as a request body (or a same-shaped fallback)."""
    from sankofa.load.payloads import default_input, transaction_bodies
    from sankofa.load.runner import load_transactions

    path = input_path or default_input()
    if path is None:
        return _FALLBACK_BODY
    tx = load_transactions(path, 1)
    return transaction_bodies(tx, run_id=f"lt{secrets.token_hex(4)}", utc_offset="-03:00")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LoadTestError(f"trivial server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise LoadTestError(f"trivial server not listening within {timeout_s:.0f} s")


def _step(report: dict[str, Any], name: str) -> dict[str, Any]:
    o = report["overall"]
    res = report["resources"]
    rate = report["config"]["rate"]
    achieved = o["achieved_rps"] or 0.0
    late = report["generator"]["dispatcher_lateness_ms"]["p99"]
    sustained = (
        rate is not None
        and achieved >= SUSTAINED_FRACTION * rate
        and o["errors"] == 0
        and late is not None
        and late <= SUSTAINED_LATENESS_P99_MS
    )
    return {
        "run": name,
        "model": report["config"]["model"],
        "offered_rps": _round(rate),
        "achieved_rps": achieved,
        "latency_ms": o["latency_ms"],
        "errors": o["errors"],
        "send_lag_ms_p99": report["generator"]["send_lag_ms"]["p99"],
        "dispatcher_lateness_ms_p99": late,
        "generator_cpu_pct": res.get("generator", {}).get("cpu_pct", {}).get("mean"),
        "server_cpu_pct": res.get("trivial server", {}).get("cpu_pct", {}).get("mean"),
        "generator_cpu_us_per_answer": report["generator"]["cpu_us_per_answer"],
        "sustained": sustained if rate is not None else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


async def _engine_cost(url: str, body: bytes, connections: int, n: int) -> dict[str, Any]:
    """The generator's own path: callbacks, no per-request object."""
    target = Target.parse(url)
    conns = [
        Connection(host=target.host, port=target.port, keep_body=False) for _ in range(connections)
    ]
    await asyncio.gather(*(c.connect() for c in conns))
    payload = build_request(target, "/", body, _HEADERS.items())
    loop = asyncio.get_running_loop()

    async def batch(count: int) -> tuple[float, float, int]:
        done: asyncio.Future[None] = loop.create_future()
        engine = ClosedLoop(
            clock=_loop.MonotonicClock(loop),
            channels=conns,
            payloads=[payload],
            stop_at=math.inf,
            capacity=count,
            timeout_s=10.0,
            on_finished=lambda: done.set_result(None) if not done.done() else None,
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        engine.start()
        await done
        return time.process_time() - cpu0, time.perf_counter() - wall0, engine.n_ok

    try:
        await batch(min(n, 2000))  # warm-up
        cpu, wall, ok = await batch(n)
    finally:
        for c in conns:
            c.close()
    return _cost("sankofa engine (generator path)", connections, n, ok, cpu, wall)


async def _client_cost(url: str, body: bytes, connections: int, n: int) -> dict[str, Any]:
    """The awaitable ``HttpClient``: one coroutine per request, like httpx's API."""
    async with HttpClient(url, connections=connections) as client:
        headers = list(_HEADERS.items())

        async def worker(count: int) -> int:
            ok = 0
            for _ in range(count):
                r = await client.request("/", body, headers)
                ok += r.status == 200
            return ok

        return await _tasks_cost("sankofa HttpClient (await API)", worker, connections, n)


async def _httpx_cost(url: str, body: bytes, connections: int, n: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:

        async def worker(count: int) -> int:
            ok = 0
            for _ in range(count):
                r = await client.post("/", content=body, headers=_HEADERS)
                ok += r.status_code == 200
            return ok

        return await _tasks_cost("httpx AsyncClient", worker, connections, n)


async def _tasks_cost(
    name: str, worker: Callable[[int], Awaitable[int]], connections: int, n: int
) -> dict[str, Any]:
    per = max(n // connections, 1)
    await asyncio.gather(*(worker(max(per // 10, 1)) for _ in range(connections)))  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    oks = await asyncio.gather(*(worker(per) for _ in range(connections)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return _cost(name, connections, per * connections, sum(oks), cpu, wall)


def _cost(
    name: str, connections: int, n: int, ok: int, cpu_s: float, wall_s: float
) -> dict[str, Any]:
    return {
        "client": name,
        "connections": connections,
        "requests": n,
        "ok": ok,
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_request": round(cpu_s / n * 1e6, 1),
        "wall_rps": round(n / wall_s, 1),
    }


def client_costs(url: str, body: bytes, connections: int, *, httpx: bool) -> list[dict[str, Any]]:
    """CPU per request of each client against ``url``, one after the other, on the same loop.

    At one connection (the client's own cost per request) and at ``connections``
    (what the pool costs when many requests are in flight).
    """
    out: list[dict[str, Any]] = []
    have_httpx = False
    if httpx:
        try:
            import httpx as _httpx  # noqa: F401

            have_httpx = True
        except ImportError:
            out.append({"client": "httpx AsyncClient", "skipped": "httpx is not installed"})
    for conns in sorted({1, connections}):
        scale = 1 if conns > 1 else 2
        out.append(_loop.run(_engine_cost(url, body, conns, 50_000 // scale)))
        out.append(_loop.run(_client_cost(url, body, conns, 20_000 // scale)))
        if have_httpx:
            out.append(_loop.run(_httpx_cost(url, body, conns, 10_000 // scale)))
    return out


def run_ceiling(args: argparse.Namespace) -> int:
    fractions = [float(x) for x in args.sweep.split(",") if x.strip()]
    if not fractions or any(not f > 0 for f in fractions):
        print("sankofa loadtest ceiling: --sweep takes fractions > 0", file=sys.stderr)
        return 2
    body = sample_body(args.input)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sampling = psutil_available()
    progress = None if args.quiet else sys.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "sankofa.load.trivial_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, Any] = {
        "label": args.label,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "trivial_server": {"url": url, "loop": _loop.loop_name(), "processes": 1},
        "connections": args.connections,
        "processes": args.processes,
        "duration_s": args.duration,
        "body_bytes": len(body),
        "criteria": {
            "sustained": f"achieved >= {SUSTAINED_FRACTION:.0%} of offered, no errors,"
            f" dispatcher lateness p99 <= {SUSTAINED_LATENESS_P99_MS:g} ms"
        },
    }
    try:
        _wait_listening(port, server)
        server_group = (GroupSpec(label="trivial server", pid=server.pid),) if sampling else ()

        def spec(rate: float | None) -> RunSpec:
            return RunSpec(
                url=url,
                path="/",
                rate=rate,
                duration_s=args.duration,
                mix=parse_priority_mix("normal=1"),
                run_id=f"lt{secrets.token_hex(4)}",
                label=args.label,
                connections=args.connections,
                processes=args.processes,
                fixed_body=body,
                sample=server_group,
                sample_generator=sampling,
            )

        _say(progress, f"closed loop, {args.connections} connections, {args.duration:g} s")
        closed = _step(summarise(run(spec(None), progress=progress)), "closed loop")
        steps = [closed]
        top = closed["achieved_rps"]
        for f in fractions:
            rate = round(top * f, 1)
            _say(progress, f"open model at {rate:,.0f} req/s ({f:.0%} of the closed-loop max)")
            steps.append(_step(summarise(run(spec(rate), progress=progress)), f"open {f:.0%}"))
        result["steps"] = steps
        sustained = [s["offered_rps"] for s in steps if s["sustained"]]
        result["generator_closed_loop_max_rps"] = top
        result["generator_open_model_sustained_rps"] = max(sustained) if sustained else None
        result["wrk"] = _wrk(args, url, body, server_group, progress)
        if result["wrk"].get("requests_per_s"):
            result["generator_vs_wrk"] = round(top / result["wrk"]["requests_per_s"], 3)
        _say(progress, "client CPU per request: sankofa vs httpx")
        result["client_cost"] = client_costs(url, body, args.connections, httpx=not args.no_httpx)
    except LoadTestError as exc:
        print(f"sankofa loadtest ceiling: {exc}", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = ceiling_markdown(result)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{args.label}.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / f'{args.label}.json'} and {out / f'{args.label}.md'}", file=sys.stderr)
    return 0


def _wrk(
    args: argparse.Namespace,
    url: str,
    body: bytes,
    server_group: tuple[GroupSpec, ...],
    progress: Any,
) -> dict[str, Any]:
    if args.no_wrk:
        return {"skipped": "--no-wrk"}
    if wrk_path() is None:
        return {"skipped": "wrk is not installed (Debian: apt-get install -y wrk)"}
    _say(progress, f"wrk -t{args.processes} -c{args.connections}")
    sampler = ResourceSampler(list(server_group)) if server_group else None
    if sampler is not None:
        sampler.start()
    try:
        w = run_wrk(
            url + "/",
            body=body,
            headers=_HEADERS,
            connections=args.connections,
            threads=args.processes,
            duration_s=args.duration,
        )
    finally:
        series = sampler.stop() if sampler is not None else []
    server_cpu = None
    if series and series[0].cpu_pct:
        server_cpu = round(sum(series[0].cpu_pct) / len(series[0].cpu_pct), 1)
    return {
        "command": " ".join(w.command),
        "requests_per_s": w.requests_per_s,
        "requests": w.requests,
        "latency_ms": w.latency_ms,
        "errors": w.errors,
        "cpu_pct": round(100 * w.cpu_s / args.duration, 1),
        "server_cpu_pct": server_cpu,
    }


def _say(stream: Any, text: str) -> None:
    if stream is not None:
        print(f"ceiling: {text}", file=stream, flush=True)


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def ceiling_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"## Generator ceiling `{r['label']}` ({r['started_at']})",
        "",
        f"Trivial server ({r['trivial_server']['loop']}, 1 process) on loopback;"
        f" {r['connections']} connections, {r['processes']} generator process(es),"
        f" {r['duration_s']:g} s per step, request body {r['body_bytes']} bytes."
        f" Sustained: {r['criteria']['sustained']}. CPU % is of one core.",
        "",
        "| run | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors"
        " | dispatcher late p99 ms | send lag p99 ms | generator CPU % | server CPU %"
        " | sustained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in r.get("steps", []):
        lat = s["latency_ms"]
        sustained = "" if s["sustained"] is None else ("yes" if s["sustained"] else "no")
        lines.append(
            f"| {s['run']} | {_f(s['offered_rps'])} | {_f(s['achieved_rps'])} | {_f(lat['p50'], 2)}"
            f" | {_f(lat['p99'], 2)} | {_f(lat['p99_9'], 2)} | {s['errors']}"
            f" | {_f(s['dispatcher_lateness_ms_p99'], 2)} | {_f(s['send_lag_ms_p99'], 2)}"
            f" | {_f(s['generator_cpu_pct'])}"
            f" | {_f(s['server_cpu_pct'])} | {sustained} |"
        )
    w = r.get("wrk", {})
    if "requests_per_s" in w:
        lat = w["latency_ms"]
        lines.append(
            f"| wrk (closed loop) | - | {_f(w['requests_per_s'])} | {_f(lat.get('p50'), 2)}"
            f" | {_f(lat.get('p99'), 2)} | - | {w['errors'] or 0} | - | - | {_f(w['cpu_pct'])}"
            f" | {_f(w['server_cpu_pct'])} | |"
        )
        lines += ["", f"wrk: `{w['command']}`"]
    else:
        lines += ["", f"wrk: skipped ({w.get('skipped')})"]
    lines += [
        "",
        "| client | connections | requests | CPU µs per request | req/s (wall) |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in r.get("client_cost", []):
        if "skipped" in c:
            lines.append(f"| {c['client']} | | skipped: {c['skipped']} | | |")
        else:
            lines.append(
                f"| {c['client']} | {c['connections']} | {c['requests']:,}"
                f" | {_f(c['cpu_us_per_request'])}"
                f" | {_f(c['wall_rps'])} |"
            )
    lines += [
        "",
        f"Generator closed-loop maximum: {_f(r.get('generator_closed_loop_max_rps'))} req/s"
        + (f" ({r['generator_vs_wrk'] * 100:.0f} % of wrk's)" if r.get("generator_vs_wrk") else "")
        + f"; highest sustained open-model rate: {_f(r.get('generator_open_model_sustained_rps'))}"
        " req/s.",
    ]
    return "\n".join(lines) + "\n"
