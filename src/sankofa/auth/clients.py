"""Registered OAuth clients (table ``auth_clients``, migration 0004) and each
process's live view of them.

A client has an id (``cl_`` and 16 hex digits), a unique name, one or more
roles, an optional rate of its own and a scrypt hash of its secret. The secret
is shown once, when the client is created, and never stored in clear.

``ClientRegistry`` keeps every live client in memory, re-read every
``refresh_s``: checking that a token's client still exists is then a
dictionary look-up on each request (one query for a client registered since
the last refresh, e.g. by another process). A deleted client's tokens stop working in
the process that deleted it at once, and in the others within ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from sankofa.auth.kdf import hash_secret, new_secret
from sankofa.auth.roles import check_roles

log = logging.getLogger(__name__)

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
ID_PATTERN: Final = re.compile(r"cl_[0-9a-f]{16}")
#: Unknown client ids remembered between refreshes, at most.
MAX_MISSING: Final = 10_000


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    roles: frozenset[str]
    #: Requests per second of its own; None: the service's default.
    rate_per_s: float | None
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """What an admin may see: everything but the secret's hash."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "roles": sorted(self.roles),
            "rate_per_s": self.rate_per_s,
            "created_at": self.created_at.isoformat(),
        }


class ClientExistsError(ValueError):
    """A client of that name is already registered."""


def _client(row: Mapping[str, Any]) -> Client:
    return Client(
        client_id=row["client_id"],
        name=row["name"],
        roles=frozenset(row["roles"]),
        rate_per_s=row["rate_per_s"],
        created_at=row["created_at"],
    )


_COLUMNS: Final = "client_id, name, roles, rate_per_s, created_at"


async def create_client(
    conn: asyncpg.Connection,
    *,
    name: str,
    roles: Iterable[str],
    rate_per_s: float | None = None,
) -> tuple[Client, str]:
    """Register a client; return it and its secret (the only time it is known)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("name must be 1-64 characters of A-Z a-z 0-9 . _ -")
    role_set = check_roles(list(roles))
    if rate_per_s is not None and not rate_per_s > 0:
        raise ValueError("rate_per_s must be > 0")
    secret = new_secret()
    hashed = await asyncio.to_thread(hash_secret, secret)
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO auth_clients (client_id, name, roles, rate_per_s, secret_hash)
            VALUES ($1, $2, $3, $4, $5)
            RETURNING {_COLUMNS}
            """,
            f"cl_{secrets.token_hex(8)}",
            name,
            sorted(role_set),
            rate_per_s,
            hashed,
        )
    except asyncpg.UniqueViolationError:
        raise ClientExistsError(f"a client named {name} already exists") from None
    assert row is not None
    return _client(row), secret


async def delete_client(conn: asyncpg.Connection, id_or_name: str) -> Client | None:
    """Delete a client by id or name; the deleted client, or None if none matched."""
    row = await conn.fetchrow(
        f"DELETE FROM auth_clients WHERE client_id = $1 OR name = $1 RETURNING {_COLUMNS}",
        id_or_name,
    )
    return None if row is None else _client(row)


async def list_clients(conn: asyncpg.Connection | asyncpg.Pool) -> list[Client]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM auth_clients ORDER BY name")
    return [_client(r) for r in rows]


async def client_with_hash(
    conn: asyncpg.Connection | asyncpg.Pool, client_id: str
) -> tuple[Client, str] | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, secret_hash FROM auth_clients WHERE client_id = $1", client_id
    )
    return None if row is None else (_client(row), row["secret_hash"])


class ClientRegistry:
    """Every live client, in memory, refreshed from PostgreSQL."""

    def __init__(self, *, pool: asyncpg.Pool, refresh_s: float, timeout_s: float) -> None:
        if refresh_s <= 0 or timeout_s <= 0:
            raise ValueError("refresh_s and timeout_s must be > 0")
        self._pool = pool
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._clients: dict[str, Client] = {}
        #: Ids looked up and not found, and when: not asked again until the next
        #: refresh, so a deleted client's tokens cost no query each.
        self._missing: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    async def lookup(self, client_id: str) -> Client | None:
        """The live client: from memory, or (a client registered since the last
        refresh, perhaps by another process) from PostgreSQL."""
        found = self._clients.get(client_id)
        if found is not None or client_id in self._missing:
            return found
        async with asyncio.timeout(self._timeout_s):
            row = await client_with_hash(self._pool, client_id)
        if row is None:
            if len(self._missing) >= MAX_MISSING:
                self._missing.clear()
            self._missing[client_id] = 0.0
            return None
        self._clients[client_id] = row[0]
        return row[0]

    def learn(self, client: Client) -> None:
        """A client just read from the database (a token issued to it here)."""
        self._clients[client.client_id] = client
        self._missing.pop(client.client_id, None)

    def forget(self, client_id: str) -> None:
        """Drop a client at once (it was just deleted here)."""
        self._clients.pop(client_id, None)
        self._missing[client_id] = 0.0

    async def refresh(self) -> None:
        async with asyncio.timeout(self._timeout_s):
            clients = await list_clients(self._pool)
        self._clients = {c.client_id: c for c in clients}
        self._missing = {}

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="auth-client-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:
                # Keep the last view: clients already known keep working while the
                # database is away; a deletion made meanwhile applies once it is back.
                # Never let the refresher die: it would freeze the view for good.
                log.warning("auth clients not refreshed: %s", type(exc).__name__)
