"""An alert end to end: real `sankofa serve` instances, a real Prometheus scraping
them, the shipped error-rate rule, a real Alertmanager with the shipped routing,
and a webhook receiver on loopback standing in for the on-call channels.

The fault: one of two instances loses its Redis (a private redis-server, stopped
under it) and is configured to fail closed for every class without it, so it
answers its scoring requests 503 while the other answers 200;
the error rate over both is far above 1 %. The rule's 5-minute window and
2-minute `for` become 10 s and 2 s, and the routes' waits 1 s, so that the
alert arrives in seconds; the expressions and the route tree are the shipped
ones. Skipped when Prometheus, Alertmanager (Debian packages prometheus,
prometheus-alertmanager) or redis-server is not installed."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import LiveServer, free_port
from deploy_tools import DEPLOY, dashboard_queries, load_yaml, require_tool, wait_for
from servers import private_redis, redis_binary
from tests_support import tx

ALERT = "SankofaErrorRateHigh"
#: How long the fault may take to page someone here; seconds in practice.
ALERT_DEADLINE_S = 60


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[tuple[str, dict[str, Any]]]]]:
    """A loopback HTTP server that keeps every (path, JSON body) POSTed to it."""
    received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            received.put((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def process(cmd: list[str], log: Path, ready_url: str) -> Iterator[None]:
    """Run ``cmd`` until the block ends, once ``ready_url`` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited: {log.read_text()[-3000:]}")
            try:
                return httpx.get(ready_url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s=30, what=f"{cmd[0]} to be ready")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped routing, with every receiver turned into a webhook to
    ``webhook_url``/<receiver name> and the waits cut to a second."""
    config: dict[str, Any] = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    config["global"] = {"resolve_timeout": config["global"]["resolve_timeout"]}
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{webhook_url}/{r['name']}"}]}
        for r in config["receivers"]
    ]

    def hurry(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            hurry(child)

    hurry(config["route"])
    return config


def error_rate_rule() -> dict[str, Any]:
    """The shipped alert, its windows shortened for a test that lasts seconds."""
    rules = load_yaml(DEPLOY / "prometheus" / "rules" / "sankofa.yml")
    rule: dict[str, Any] = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == ALERT
    )
    assert rule["expr"].count("[5m]") == 2
    rule["expr"] = rule["expr"].replace("[5m]", "[10s]")
    rule["for"] = "2s"
    return {"groups": [{"name": "e2e", "rules": [rule]}]}


@pytest.fixture
def binaries() -> tuple[str, str]:
    """Prometheus and Alertmanager; asked for before the live server, so that a
    machine without them skips at once."""
    if redis_binary() is None:
        pytest.skip("no redis-server binary")
    prometheus = require_tool("prometheus", package="prometheus")
    alertmanager = require_tool(
        "alertmanager", "prometheus-alertmanager", package="prometheus-alertmanager"
    )
    return prometheus, alertmanager


def test_error_rate_alert_reaches_the_on_call_webhook(
    binaries: tuple[str, str], live_server: LiveServer, tmp_path: Path
) -> None:
    prometheus, alertmanager = binaries
    with contextlib.ExitStack() as stack:
        # The instance that will fail: ready on its own Redis, which then stops.
        redis_stack = stack.enter_context(contextlib.ExitStack())
        redis_url = redis_stack.enter_context(private_redis(tmp_path))
        # Every class fails closed without Redis (the default fails only low closed
        # and scores the rest on degraded features): its answers become 503s.
        faulty = LiveServer(
            {
                **live_server.env,
                "SANKOFA_REDIS_URL": redis_url,
                "SANKOFA_FEATURES_FAIL_CLOSED": "critical,high,normal,low",
            },
            tmp_path / "f.log",
        )
        faulty.start()
        stack.callback(faulty.stop)

        webhook_url, received = stack.enter_context(webhook_receiver())
        am_port = free_port()
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
        stack.enter_context(
            process(
                [
                    alertmanager,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # one node, no gossip port
                ],
                tmp_path / "alertmanager.log",
                f"http://127.0.0.1:{am_port}/-/ready",
            )
        )

        prom_port = free_port()
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(error_rate_rule()))
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "sankofa",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{live_server.port}", f"127.0.0.1:{faulty.port}"]}
                    ],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        stack.enter_context(
            process(
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
                f"http://127.0.0.1:{prom_port}/-/ready",
            )
        )

        redis_stack.close()  # the fault

        statuses: dict[str, set[int]] = {"healthy": set(), "faulty": set()}
        pages: list[tuple[str, dict[str, Any]]] = []
        sent = 0

        def paged() -> bool:
            nonlocal sent
            # Traffic on both instances until the page arrives: one in two fails.
            with httpx.Client(timeout=10) as client:
                for name, server in (("healthy", live_server), ("faulty", faulty)):
                    sent += 1
                    body = tx(sent, customer_id=f"e2e-{sent % 7}")
                    r = client.post(f"{server.url}/v1/transactions", json=body)
                    statuses[name].add(r.status_code)
            with contextlib.suppress(queue.Empty):
                while True:
                    pages.append(received.get_nowait())
            return any(
                a["labels"]["alertname"] == ALERT for _, page in pages for a in page["alerts"]
            )

        wait_for(paged, timeout_s=ALERT_DEADLINE_S, what=f"{ALERT} at the webhook")

        # While the data is there: every dashboard query runs on it.
        answers: dict[str, list[Any]] = {}
        for title, expr in dashboard_queries(rate_interval="10s").items():
            r = httpx.get(
                f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": expr}, timeout=10
            )
            assert r.status_code == 200 and r.json()["status"] == "success", (title, r.text)
            answers[title] = r.json()["data"]["result"]

    assert statuses["healthy"] == {200}
    assert statuses["faulty"] and all(s >= 500 for s in statuses["faulty"]), statuses
    path, page = next(
        (p, page)
        for p, page in pages
        if any(a["labels"]["alertname"] == ALERT for a in page["alerts"])
    )
    # Routed as shipped: a critical alert goes to the on-call receiver.
    assert path == "/oncall-critical"
    assert page["status"] == "firing"
    alert = next(a for a in page["alerts"] if a["labels"]["alertname"] == ALERT)
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "sankofa"
    assert "fail with 5xx" in alert["annotations"]["summary"]
    for shown in ("Throughput / A", "Error rate (5xx) / A", "Latency p99 by priority / A"):
        assert answers[shown], f"{shown} shows nothing"
