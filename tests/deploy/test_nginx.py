"""deploy/nginx/nginx.conf: `nginx -t`, then a real nginx in front of stand-in
upstreams on loopback (the file's own text, with addresses, ports and
certificate paths swapped), to see it do what its comments say: TLS 1.3 only,
critical traffic to the critical lanes, failover past a dead instance (POSTs
included), a 503 passed on without taking its instance out, X-Request-Id
passed on, the client limits.

Skipped when nginx (Debian package nginx) or openssl is not installed."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from deploy_tools import DEPLOY, local_conf, nginx_command, require_tool, run, wait_for

CONF = DEPLOY / "nginx" / "nginx.conf"


@pytest.fixture(scope="module")
def nginx() -> str:
    return require_tool("nginx", package="nginx")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    openssl = require_tool("openssl", package="openssl")
    d = tmp_path_factory.mktemp("certs")
    # As deploy/README.md tells users to make one for a trial, plus the IP
    # address the test connects to.
    result = run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt"),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return d


def test_nginx_accepts_the_configuration(nginx: str, certs: Path, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    upstreams = {f"sankofa-{i}:{p}": free_port() for i in range(1, 5) for p in (8000, 8001)}
    conf.write_text(
        local_conf(
            CONF.read_text(),
            certs=certs,
            work=tmp_path,
            upstreams=upstreams,
            http_port=free_port(),
            https_port=free_port(),
        )
    )
    result = run(nginx_command(nginx, tmp_path, conf, "-t"))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_shipped_limits_match_the_service() -> None:
    from sankofa.api.headers import MAX_HEADER_BYTES
    from sankofa.settings import Settings

    text = CONF.read_text()
    assert "ssl_protocols TLSv1.3;" in text
    assert f"large_client_header_buffers 4 {MAX_HEADER_BYTES // 1024}k;" in text
    body_mb = Settings.model_fields["max_body_bytes"].default // (1024 * 1024)
    assert f"client_max_body_size {body_mb}m;" in text
    assert "proxy_next_upstream error timeout non_idempotent;" in text


# -- a real nginx in front of stand-in instances -------------------------------------


@dataclass
class Upstream:
    """A stand-in instance: answers every request with what it saw, or 503."""

    name: str
    status: int = 200
    hits: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])


def _serve(upstream: Upstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            seen = {
                "upstream": upstream.name,
                "method": self.command,
                "path": self.path,
                "request_id": self.headers.get("x-request-id"),
                "forwarded_proto": self.headers.get("x-forwarded-proto"),
            }
            upstream.hits.append(seen)
            body = json.dumps(seen).encode()
            self.send_response(upstream.status)
            if upstream.status == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Proxy:
    https_url: str
    http_url: str
    https_port: int
    certs: Path
    access_log: Path
    upstreams: dict[str, Upstream]
    dead_port: int

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.certs / "tls.crt"))
        return httpx.Client(base_url=self.https_url, verify=ctx, timeout=10)


@pytest.fixture(scope="module")
def proxy(nginx: str, certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("nginx")
    # Main lane: instance 2 is dead (nothing listens). Every other one answers
    # (one test makes critical-2 answer 503 for a while).
    ups = {
        name: Upstream(name)
        for name in ("main-1", "main-3", "main-4", "critical-1", "critical-2", "critical-3", "critical-4")
    }  # fmt: skip
    for u in ups.values():
        u.server = _serve(u)
    dead = free_port()
    mapping = {
        "sankofa-1:8000": ups["main-1"].port,
        "sankofa-2:8000": dead,
        "sankofa-3:8000": ups["main-3"].port,
        "sankofa-4:8000": ups["main-4"].port,
        **{f"sankofa-{i}:8001": ups[f"critical-{i}"].port for i in range(1, 5)},
    }
    http_port, https_port = free_port(), free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        local_conf(
            CONF.read_text(),
            certs=certs,
            work=work,
            upstreams=mapping,
            http_port=http_port,
            https_port=https_port,
        )
    )
    access_log = work / "access.log"
    with access_log.open("wb") as out, (work / "error.log").open("wb") as err:
        proc = subprocess.Popen(
            nginx_command(nginx, work, conf, "-g", "daemon off;"), stdout=out, stderr=err
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {(work / 'error.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout_s=10, what="nginx to listen")
        yield Proxy(
            https_url=f"https://127.0.0.1:{https_port}",
            http_url=f"http://127.0.0.1:{http_port}",
            https_port=https_port,
            certs=certs,
            access_log=access_log,
            upstreams=ups,
            dead_port=dead,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for u in ups.values():
            assert u.server is not None
            u.server.shutdown()
            u.server.server_close()


def _score(client: httpx.Client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/transactions", json={"transaction_id": "t"}, headers=headers or {})
    assert r.status_code == 200, r.text
    seen: dict[str, Any] = r.json()
    return seen


def test_posts_fail_over_past_a_dead_instance(proxy: Proxy) -> None:
    with proxy.client() as client:
        served = [_score(client)["upstream"] for _ in range(12)]
    assert set(served) <= {"main-1", "main-3", "main-4"}
    # The dead instance was tried, and the same request went on to a live one.
    log = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    retried = [e for e in log if e["upstream"].startswith(f"127.0.0.1:{proxy.dead_port}, ")]
    assert retried, log
    assert all(e["status"] == 200 and e["method"] == "POST" for e in retried)


def test_a_503_reaches_the_client_and_does_not_take_the_instance_out(proxy: Proxy) -> None:
    # An instance shedding load answers 503 with Retry-After. nginx passes it
    # on and keeps the instance in: were 503 a reason to retry, it would also
    # count towards max_fails, and a few shedding instances would be taken out
    # all at once (502 "no live upstreams" for everyone; docs/scaling.md).
    shedding = proxy.upstreams["critical-2"]
    hits_before = len(shedding.hits)
    shedding.status = 503
    try:
        with proxy.client() as client:
            answers = [
                client.post("/v1/transactions", json={}, headers={"x-priority": "critical"})
                for _ in range(16)
            ]
    finally:
        shedding.status = 200
    refused = [r for r in answers if r.status_code == 503]
    assert refused and all(r.headers["retry-after"] == "1" for r in refused)
    assert {r.status_code for r in answers} == {200, 503}
    # Round robin over four: about a quarter each, the shedding one included
    # throughout (taken out, it would have had max_fails = 2 at most).
    assert len(shedding.hits) - hits_before == len(refused) >= 3


@pytest.mark.parametrize(
    ("headers", "lane"),
    [
        ({}, "main"),
        ({"x-priority": "critical"}, "critical"),
        ({"x-priority": "CRITICAL"}, "critical"),
        ({"x-priority": "high"}, "main"),
        ({"priority": "u=0"}, "critical"),
        ({"priority": "u=1, i"}, "critical"),
        ({"priority": "i, u=1;x=2"}, "critical"),
        ({"priority": "u=3"}, "main"),
        ({"priority": "u=0, u=5"}, "main"),  # the last member wins (RFC 8941)
        ({"priority": "u=10"}, "main"),
        ({"x-priority": "normal", "priority": "u=0"}, "main"),  # X-Priority wins
    ],
)
def test_priority_headers_choose_the_lane(proxy: Proxy, headers: dict[str, str], lane: str) -> None:
    from sankofa.queues.priority import Priority, resolve_priority

    with proxy.client() as client:
        upstream = _score(client, headers)["upstream"]
    assert upstream.split("-")[0] == lane
    # The same rule as the service's own.
    expected = resolve_priority(headers.get("x-priority"), headers.get("priority"))
    assert (expected is Priority.CRITICAL) == (lane == "critical")


def test_request_id_is_passed_on_or_made(proxy: Proxy) -> None:
    with proxy.client() as client:
        given = _score(client, {"x-request-id": "req-abc-123"})
        made = _score(client)
        critical = client.get("/v1/transactions/t1?x=1", headers={"x-priority": "critical"})
    assert given["request_id"] == "req-abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made["request_id"])
    assert made["forwarded_proto"] == "https"
    # The critical lane's internal detour does not change what the instance sees.
    assert critical.json()["path"] == "/v1/transactions/t1?x=1"


def test_only_tls_1_3(proxy: Proxy) -> None:
    old = ssl.create_default_context(cafile=str(proxy.certs / "tls.crt"))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=old, timeout=5) as client:
        client.get(f"{proxy.https_url}/health/live")
    with proxy.client() as client:
        r = client.get("/health/live")
    assert r.status_code == 200
    assert "max-age" in r.headers["strict-transport-security"]


def test_plain_http_is_redirected(proxy: Proxy) -> None:
    r = httpx.get(f"{proxy.http_url}/v1/transactions/t1", timeout=5)
    assert r.status_code == 308
    assert r.headers["location"].startswith("https://")


def test_metrics_and_bench_routes_are_not_exposed(proxy: Proxy) -> None:
    hits_before = sum(len(u.hits) for u in proxy.upstreams.values())
    with proxy.client() as client:
        assert client.get("/metrics").status_code == 404
        assert client.post("/bench/bare", json={}).status_code == 404
    assert sum(len(u.hits) for u in proxy.upstreams.values()) == hits_before


def test_client_limits(proxy: Proxy) -> None:
    with proxy.client() as client:
        assert client.get("/health/live", headers={"x-long": "a" * 15_000}).status_code == 200
        assert client.get("/health/live", headers={"x-long": "a" * 17_000}).status_code == 400
    # A body over 4 MB is refused on its Content-Length, before it is sent.
    ctx = ssl.create_default_context(cafile=str(proxy.certs / "tls.crt"))
    with (
        socket.create_connection(("127.0.0.1", proxy.https_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(
            b"POST /v1/transactions/batch HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4194305\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 413")
