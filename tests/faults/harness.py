"""Private servers, a service process, load from the project's own generator, and the
invariant every fault test checks.

The invariant (issue 8): every transaction that got a 200 is in PostgreSQL with its
decision; nothing explicitly refused (4xx, 503, 504) is stored; retrying every
request that did not get a 200, with the same ids, completes the set exactly once;
and the online feature histories hold each stored transaction exactly once and
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import redis as redis_sync

from conftest import FIXTURES, LiveServer, free_port
from servers import redis_binary

SLICE = FIXTURES / "handbook-slice.csv.gz"


# -- private Redis --------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own that can be stopped, slowed and restarted empty."""

    def __init__(self, workdir: Path) -> None:
        binary = redis_binary()
        if binary is None:
            import pytest

            pytest.skip("no redis-server binary (install the embedded extra)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # gone at once, nothing saved: it comes back empty
            self.proc.wait()
        self.proc = None


# -- private PostgreSQL ---------------------------------------------------------------


class PrivatePostgres:
    """An embedded PostgreSQL (pgserver) in a folder of our own, stoppable."""

    def __init__(self, workdir: Path) -> None:
        try:
            import pgserver  # noqa: F401
        except ImportError:
            import pytest

            pytest.skip("pgserver not installed (the embedded extra)")
        # Run as root, pgserver runs PostgreSQL as its own user, who must be able to
        # reach the data folder: pytest's tmp_path lives under a private (0700) folder.
        self._parent = Path(tempfile.mkdtemp(prefix="sankofa-faults-pg-"))
        self._parent.chmod(0o755)
        self.workdir = self._parent / "pg"
        self.workdir.mkdir()
        self.server: Any = None
        self.url = ""

    def start(self) -> None:
        import pgserver

        if self.server is None:
            self.server = pgserver.get_server(self.workdir, cleanup_mode="stop")  # type: ignore[attr-defined]
            self.url = self.server.get_uri()
        else:
            self._pg_ctl(
                ["-w", "-o", f"-h '' -k {self.workdir}", "-l", str(self.workdir / "log"), "start"]
            )

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self._parent, ignore_errors=True)

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(args, pgdata=self.workdir, user=self.server.system_user)


# -- a TCP proxy that can add delay ---------------------------------------------------


class DelayProxy:
    """Forwards loopback TCP to a port, adding ``delay_s`` to every chunk each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        handlers: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                try:
                    up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
                except OSError:
                    writer.close()
                    return
                await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
            finally:
                handlers.discard(task)

        async def main() -> None:
            self._stopping = asyncio.Event()
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._started.set()
            async with server:
                await self._stopping.wait()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)


# -- the service ----------------------------------------------------------------------


class Service(LiveServer):
    """``sankofa serve`` in its own process against the given servers."""

    def __init__(self, database_url: str, redis_url: str, log_path: Path, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
        env.update(
            {
                "SANKOFA_ENVIRONMENT": "test",
                "SANKOFA_DATABASE_URL": database_url,
                "SANKOFA_REDIS_URL": redis_url,
                "SANKOFA_REDIS_PREFIX": f"flt{secrets.token_hex(3)}",
                "SANKOFA_HMAC_KEY": "fault-test-hmac-key-0123456789",
                "SANKOFA_LOG_LEVEL": "warning",
                **{f"SANKOFA_{k.upper()}": v for k, v in settings.items()},
            }
        )
        super().__init__(env, log_path)

    def start(self, timeout_s: float = 60.0) -> None:
        super().start(timeout_s)

    def metric(self, name: str) -> float:
        """A counter's value from /metrics (0 if it has no sample yet)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- load from the project's own generator --------------------------------------------


@dataclass
class LoadRun:
    """A background open-model run of ``sankofa loadtest`` and, once done, each
    request's transaction id, body and status."""

    url: str
    rate: float
    duration_s: float
    start_row: int = 0
    timeout_s: float = 5.0
    mix: str = "critical=0.1,high=0.2,normal=0.5,low=0.2"
    run_id: str = field(default_factory=lambda: f"flt{secrets.token_hex(3)}")
    data: Any = None
    ids: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> LoadRun:
        from sankofa.load.payloads import transaction_bodies
        from sankofa.load.plan import parse_priority_mix
        from sankofa.load.runner import RunSpec, load_transactions, run

        spec = RunSpec(
            url=self.url,
            path="/v1/transactions",
            rate=self.rate,
            duration_s=self.duration_s,
            mix=parse_priority_mix(self.mix),
            run_id=self.run_id,
            input_path=SLICE,
            start_row=self.start_row,
            timeout_s=self.timeout_s,
            sample_generator=False,
            use_uvloop=True,
        )
        n = int(np.ceil(self.rate * self.duration_s)) + 10
        cols = load_transactions(SLICE, n, self.start_row)
        self.bodies = transaction_bodies(cols, run_id=self.run_id, utc_offset="-03:00")
        self.ids = [
            b.split(b'"transaction_id":"', 1)[1].split(b'"', 1)[0].decode() for b in self.bodies
        ]

        def go() -> None:
            try:
                self.data = run(spec, progress=None)
            except BaseException as exc:  # surfaced by wait()
                self._error = exc

        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()
        return self

    def wait(self) -> LoadRun:
        assert self._thread is not None
        self._thread.join(self.duration_s + self.timeout_s + 120)
        if self._error is not None:
            raise self._error
        assert self.data is not None, "load run did not finish"
        n = len(self.data.status)
        self.ids, self.bodies = self.ids[:n], self.bodies[:n]
        return self

    def statuses(self) -> dict[str, int]:
        return dict(zip(self.ids, self.data.status.tolist(), strict=True))


# -- the invariant ----------------------------------------------------------------------


REFUSED = {400, 409, 413, 415, 422, 429, 503, 504}


async def stored_ids(database_url: str, ids: list[str]) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT transaction_id FROM transactions WHERE transaction_id = ANY($1::text[])"
            " AND decision IS NOT NULL AND features IS NOT NULL",
            ids,
        )
        return {r["transaction_id"] for r in rows}
    finally:
        await conn.close()


def check_acknowledged_and_refused(
    database_url: str, statuses: dict[str, int], outcome_unknown: float = 0
) -> dict[str, Any]:
    """Every 200 stored with its decision; nothing refused stored, but for writes the
    service answered 503 outcome-unknown (it counts them: ``outcome_unknown``)."""
    stored = asyncio.run(stored_ids(database_url, list(statuses)))
    ok = {i for i, s in statuses.items() if s == 200}
    refused = {i for i, s in statuses.items() if s in REFUSED}
    lost = ok - stored
    assert not lost, f"{len(lost)} acknowledged transactions lost, e.g. {sorted(lost)[:5]}"
    leaked = refused & stored
    assert len(leaked) <= outcome_unknown, (
        f"{len(leaked)} refused transactions stored (only {outcome_unknown:g} answered"
        f" outcome-unknown), e.g. {sorted(leaked)[:5]}"
    )
    assert all(statuses[i] == 503 for i in leaked), {statuses[i] for i in leaked}
    return {
        "in_doubt_stored": sorted(leaked),
        "outcome_unknown_answered": int(outcome_unknown),
        "offered": len(statuses),
        "acknowledged": len(ok),
        "refused": len(refused),
        "unanswered": len(statuses) - len(ok) - len(refused),
        "stored": len(stored),
        "lost": 0,
    }


def retry_until_complete(
    url: str,
    ids: list[str],
    bodies: list[bytes],
    statuses: dict[str, int],
    timeout_s: float = 60,
    stored: set[str] | frozenset[str] = frozenset(),
) -> int:
    """Send again every request that did not get a 200 (same id, same body) until all
    do; those already ``stored`` must come back as replays. Returns how many were
    retried."""
    pending = [(i, b) for i, b in zip(ids, bodies, strict=True) if statuses[i] != 200]
    retried = len(pending)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=10) as client:
        while pending and time.monotonic() < deadline:
            left = []
            for i, body in pending:
                try:
                    r = client.post(
                        "/v1/transactions",
                        content=body,
                        headers={"content-type": "application/json", "x-priority": "critical"},
                    )
                    ok = r.status_code == 200
                    if ok and i in stored:
                        assert r.json()["replayed"] is True, r.text
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    left.append((i, body))
            pending = left
            if pending:
                time.sleep(0.5)
    assert not pending, f"{len(pending)} requests still refused after retrying"
    return retried


def check_histories(
    redis_url: str, prefix: str, database_url: str, *, complete: bool = False
) -> None:
    """The histories hold no transaction twice and nothing that was not stored (older
    records may have been trimmed: windows never reach them). ``complete``: every
    stored transaction is in both its customer's and its terminal's history (for runs
    too short for any record to be trimmed)."""
    from sankofa.engine.features_online import id_hash

    client = redis_sync.Redis.from_url(redis_url)
    try:
        counted: dict[bytes, int] = {}
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = b":c:" if b":c:" in key else b":t:" if b":t:" in key else None
            if kind is None:
                continue  # the rebuild marker and its lock
            blob = client.get(key) or b""
            records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 24)
            at = 16 if kind == b":c:" else 8
            for rec in records:
                h = bytes(rec[at : at + 8])
                counted[h] = counted.get(h, 0) + 1
    finally:
        client.close()

    async def ids() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return [r[0] for r in await conn.fetch("SELECT transaction_id FROM transactions")]
        finally:
            await conn.close()

    stored = {id_hash(i) for i in asyncio.run(ids())}
    extra = {h: n for h, n in counted.items() if h not in stored}
    assert not extra, f"{len(extra)} records in Redis for transactions never stored"
    doubled = {h: n for h, n in counted.items() if n > 2}  # one customer, one terminal record
    assert not doubled, f"{len(doubled)} transactions counted more than once"
    if complete:
        missing = [h for h in stored if counted.get(h, 0) != 2]
        assert not missing, f"{len(missing)} stored transactions missing from the histories"


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def started(*things: Any) -> Iterator[None]:
    try:
        for t in things:
            t.start()
        yield
    finally:
        for t in reversed(things):
            with contextlib.suppress(Exception):
                (getattr(t, "close", None) or t.stop)()
