"""The asyncpg pool and the versioned SQL migrations applied at start.

Migrations are the files ``store/migrations/NNNN_name.sql``, applied in order,
each in its own transaction, under an advisory lock so that several instances
starting at once apply each file exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import asyncpg

log = logging.getLogger(__name__)

#: Advisory lock key held while migrating ("sankofa" in ASCII, as a bigint).
MIGRATION_LOCK_KEY: Final = 0x73616E6B6F6661
_NAME: Final = re.compile(r"^([0-9]{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("sankofa.store").joinpath("migrations").iterdir():
        m = _NAME.fullmatch(entry.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mg: mg.version)
    versions = [mg.version for mg in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations not applied yet; return the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        # Looked up first: the service's own role (sankofa_app, 0005) may not
        # CREATE in the schema, even IF NOT EXISTS, yet starts on a migrated database.
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            await conn.execute(
                """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
            )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mg in migrations():
            if mg.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mg.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mg.version,
                    mg.name,
                )
            log.info("applied migration %04d_%s", mg.version, mg.name)
            applied_now.append(mg.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Decisions are stored in UTC; clients get their own offset back from event_time + offset.
    await conn.execute("SET TIME ZONE 'UTC'")


#: Plan every statement with its actual parameters. asyncpg prepares each query
#: once per connection; PostgreSQL would then settle on a generic plan chosen
#: while the tables were small (a sequential scan) and keep it as they grow
#: whenever statistics lag (autovacuum off or behind): lookups by id turned
#: into full scans in a 1.75M-transaction replay. Planning costs far less.
SERVER_SETTINGS: Final = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(
    url: str, *, min_size: int, max_size: int, timeout_s: float, **kwargs: Any
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        command_timeout=timeout_s,
        init=_init_connection,
        server_settings=SERVER_SETTINGS,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def discard_on_failure(
    conn: asyncpg.Connection, *, keep_on: tuple[type[BaseException], ...] = ()
) -> AsyncIterator[None]:
    """Close a connection an operation failed on, unless the failure is one of
    ``keep_on`` (errors about the data, which leave the connection sound).

    A query cancelled by its deadline mid-operation, or a server that went away,
    can leave the connection between two protocol states; handed back to the
    pool it fails the next user with an internal error. Closing it costs one
    reconnect.
    """
    try:
        yield
    except keep_on:
        raise
    except BaseException:
        conn.terminate()
        raise
