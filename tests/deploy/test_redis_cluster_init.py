"""deploy/redis: the Compose stack's cluster bootstrap, run for real on three
loopback redis-server nodes started with the shipped node configuration. It
forms one cluster covering every slot, and a second run changes nothing.
Skipped without redis-server 7 / redis-cli."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from deploy_tools import DEPLOY, find_tool, redis_server, require_tool, run, wait_for

PASSWORD = "cluster-test-password"


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: an ephemeral
    port from the kernel is often too high for that."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20_000, 30_000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10_000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports")


@contextlib.contextmanager
def cluster_nodes(workdir: Path, count: int) -> Iterator[list[int]]:
    server = redis_server(min_major=7)
    ports = [cluster_port() for _ in range(count)]
    procs = []
    try:
        for port in ports:
            d = workdir / str(port)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        server, str(DEPLOY / "redis" / "redis-cluster.conf"),
                        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                        "--appendonly", "no", "--save", "",
                        "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip

        def listening() -> bool:
            for port in ports:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                except OSError:
                    return False
            return True

        wait_for(listening, timeout_s=10, what="the redis nodes")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def test_init_forms_the_cluster_once(tmp_path: Path) -> None:
    # The redis-cli beside that server (the virtualenv may hold an older one).
    cli = str(Path(redis_server(min_major=7)).with_name("redis-cli"))
    if not Path(cli).is_file():
        cli = require_tool("redis-cli", package="redis-tools")
    shell = find_tool("sh")
    assert shell
    with cluster_nodes(tmp_path, 3) as ports:
        env = {
            "PATH": str(Path(cli).parent) + ":/usr/bin:/bin",
            "REDISCLI_AUTH": PASSWORD,
            "REDIS_NODES": " ".join(f"127.0.0.1:{p}" for p in ports),
        }
        script = str(DEPLOY / "redis" / "redis-cluster-init.sh")
        first = run([shell, script], env=env, timeout_s=60)
        assert first.returncode == 0, first.stdout + first.stderr
        info = run([cli, "-p", str(ports[0]), "cluster", "info"], env=env).stdout
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        assert "cluster_known_nodes:3" in info
        again = run([shell, script], env=env, timeout_s=30)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already formed" in again.stdout
