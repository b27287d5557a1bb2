"""Pieces of ``loadtest ceiling``: the trivial server, wrk's script and output, the summary."""

from __future__ import annotations

import asyncio

from sankofa.load.ceiling import ceiling_markdown
from sankofa.load.http import HttpClient
from sankofa.load.trivial_server import BODY, TrivialProtocol
from sankofa.load.wrk import lua_script, parse_output

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   401.22us  120.00us   3.10ms   90.00%
    Req/Sec    85.00k     2.00k   90.00k    70.00%
  Latency Distribution
     50%  380.00us
     75%  450.00us
     90%  520.00us
     99%    1.05ms
  423456 requests in 5.00s, 110.00MB read
Requests/sec:  84691.20
Transfer/sec:     22.00MB
"""


async def test_trivial_server_answers_every_request_including_pipelined_ones() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request * 2 + request[:10])  # two whole requests and a partial one
        await writer.drain()
        first = await reader.readuntil(BODY)
        second = await reader.readuntil(BODY)
        assert first.startswith(b"HTTP/1.1 200 OK") and second.startswith(b"HTTP/1.1 200 OK")
        writer.write(request[10:])
        assert (await reader.readuntil(BODY)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        await writer.wait_closed()
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            r = await client.request("/anything", b"{}")
            assert (r.status, r.body) == (200, BODY)
    finally:
        server.close()
        await server.wait_closed()


def test_wrk_script_and_output() -> None:
    script = lua_script(b'{"a":"]]"}', {"Content-Type": "application/json"})
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = [===[{"a":"]]"}]===]' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    rps, total, latency, errors = parse_output(WRK_OUTPUT)
    assert (rps, total, errors) == (84691.2, 423456, None)
    assert latency == {"p50": 0.38, "p75": 0.45, "p90": 0.52, "p99": 1.05}


def test_ceiling_summary_names_the_comparison() -> None:
    lat = {"p50": 0.5, "p95": 0.8, "p99": 1.0, "p99_9": 2.0, "max": 3.0, "mean": 0.6}
    step = {
        "run": "closed loop",
        "offered_rps": None,
        "achieved_rps": 100000.0,
        "latency_ms": lat,
        "errors": 0,
        "dispatcher_lateness_ms_p99": None,
        "send_lag_ms_p99": 0.0,
        "generator_cpu_pct": 95.0,
        "server_cpu_pct": 70.0,
        "sustained": None,
    }
    text = ceiling_markdown(
        {
            "label": "c",
            "started_at": "now",
            "trivial_server": {"loop": "uvloop"},
            "connections": 64,
            "processes": 1,
            "duration_s": 5.0,
            "body_bytes": 150,
            "criteria": {"sustained": "x"},
            "steps": [step],
            "wrk": {"skipped": "wrk is not installed"},
            "client_cost": [{"client": "httpx AsyncClient", "skipped": "not installed"}],
            "generator_closed_loop_max_rps": 100000.0,
            "generator_open_model_sustained_rps": None,
        }
    )
    assert "| closed loop | - | 100,000.0 |" in text
    assert "wrk: skipped (wrk is not installed)" in text
