"""PostgreSQL reads and writes of rules, list entries and customer limits
(tables of migration 0003). Callers own the transaction and the timeout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from sankofa.errors import RuleConflictError
from sankofa.rules.model import LimitsIn, ListEntryIn, Rule, RuleSpec

_RULE_COLUMNS: Final = (
    "rule_id, version, deleted, action, priority, mode, expression, description, created_at"
)


def _rule(r: asyncpg.Record) -> Rule:
    return Rule(
        rule_id=r["rule_id"],
        version=r["version"],
        action=r["action"],
        priority=r["priority"],
        mode=r["mode"],
        expression=r["expression"],
        description=r["description"],
        created_at=r["created_at"],
        deleted=r["deleted"],
    )


async def revision(conn: asyncpg.Connection) -> int:
    """The latest change to any rule (0 before the first)."""
    v: int = await conn.fetchval("SELECT coalesce(max(revision), 0) FROM rule_versions")
    return v


async def current_rules(conn: asyncpg.Connection) -> tuple[int, list[Rule]]:
    """(revision, the rules in force) read in one statement, so they agree."""
    rows = await conn.fetch(
        f"""
        WITH latest AS (
            SELECT DISTINCT ON (rule_id) {_RULE_COLUMNS}
            FROM rule_versions ORDER BY rule_id, version DESC
        )
        SELECT (SELECT coalesce(max(revision), 0) FROM rule_versions) AS rev, latest.*
        FROM (SELECT 1) one LEFT JOIN latest ON NOT latest.deleted
        """
    )
    rev = int(rows[0]["rev"]) if rows else 0
    return rev, [_rule(r) for r in rows if r["rule_id"] is not None]


async def latest(conn: asyncpg.Connection, rule_id: str) -> Rule | None:
    """The latest version of a rule, a deletion included; None if never created."""
    r = await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS} FROM rule_versions WHERE rule_id = $1"
        " ORDER BY version DESC LIMIT 1",
        rule_id,
    )
    return None if r is None else _rule(r)


async def history(conn: asyncpg.Connection, rule_id: str) -> list[Rule]:
    rows = await conn.fetch(
        f"SELECT {_RULE_COLUMNS} FROM rule_versions WHERE rule_id = $1 ORDER BY version",
        rule_id,
    )
    return [_rule(r) for r in rows]


async def append(
    conn: asyncpg.Connection, spec: RuleSpec, *, version: int, deleted: bool = False
) -> Rule:
    """Append a version; a concurrent writer of the same version gets a 409."""
    try:
        r = await conn.fetchrow(
            f"""
            INSERT INTO rule_versions
                (rule_id, version, deleted, action, priority, mode, expression, description)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            RETURNING {_RULE_COLUMNS}
            """,
            spec.rule_id,
            version,
            deleted,
            spec.action,
            spec.priority,
            spec.mode,
            spec.expression,
            spec.description,
        )
    except asyncpg.UniqueViolationError:
        raise RuleConflictError(
            f"rule {spec.rule_id} was changed meanwhile; read it again and retry"
        ) from None
    assert r is not None
    return _rule(r)


# -- lists ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEntry:
    kind: str
    value_ref: str
    list: str
    reason: str
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _entry(r: asyncpg.Record) -> StoredEntry:
    return StoredEntry(
        r["kind"],
        r["value_ref"],
        r["list"],
        r["reason"],
        r["expires_at"],
        r["created_at"],
        r["updated_at"],
    )


async def put_entry(
    conn: asyncpg.Connection, list_name: str, kind: str, value_ref: str, e: ListEntryIn
) -> tuple[StoredEntry, bool]:
    """Add or replace an entry; (entry, created)."""
    r = await conn.fetchrow(
        """
        INSERT INTO list_entries (kind, value_ref, list, reason, expires_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (kind, value_ref, list) DO UPDATE
            SET reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, updated_at = now()
        RETURNING *, (xmax = 0) AS created
        """,
        kind,
        value_ref,
        list_name,
        e.reason,
        e.expires_at,
    )
    assert r is not None
    return _entry(r), bool(r["created"])


async def entries(
    conn: asyncpg.Connection, list_name: str, kind: str, *, limit: int, after: str | None
) -> list[StoredEntry]:
    rows = await conn.fetch(
        """
        SELECT * FROM list_entries WHERE list = $1 AND kind = $2 AND value_ref > $3
        ORDER BY value_ref LIMIT $4
        """,
        list_name,
        kind,
        after or "",
        limit,
    )
    return [_entry(r) for r in rows]


async def get_entry(
    conn: asyncpg.Connection, list_name: str, kind: str, value_ref: str
) -> StoredEntry | None:
    r = await conn.fetchrow(
        "SELECT * FROM list_entries WHERE list = $1 AND kind = $2 AND value_ref = $3",
        list_name,
        kind,
        value_ref,
    )
    return None if r is None else _entry(r)


async def delete_entry(conn: asyncpg.Connection, list_name: str, kind: str, value_ref: str) -> bool:
    done: str = await conn.execute(
        "DELETE FROM list_entries WHERE list = $1 AND kind = $2 AND value_ref = $3",
        list_name,
        kind,
        value_ref,
    )
    return done.endswith(" 1")


# -- limits --------------------------------------------------------------------


async def put_limits(conn: asyncpg.Connection, customer_ref: str, lim: LimitsIn) -> dict[str, Any]:
    r = await conn.fetchrow(
        """
        INSERT INTO customer_limits (customer_ref, night_pix_limit_cents, max_amount_cents, reason)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (customer_ref) DO UPDATE
            SET night_pix_limit_cents = EXCLUDED.night_pix_limit_cents,
                max_amount_cents = EXCLUDED.max_amount_cents,
                reason = EXCLUDED.reason, updated_at = now()
        RETURNING *
        """,
        customer_ref,
        lim.night_pix_limit_cents,
        lim.max_amount_cents,
        lim.reason,
    )
    assert r is not None
    return dict(r)


async def get_limits(conn: asyncpg.Connection, customer_ref: str) -> dict[str, Any] | None:
    r = await conn.fetchrow("SELECT * FROM customer_limits WHERE customer_ref = $1", customer_ref)
    return None if r is None else dict(r)


async def all_limits(
    conn: asyncpg.Connection, *, limit: int, after: str | None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM customer_limits WHERE customer_ref > $1 ORDER BY customer_ref LIMIT $2",
        after or "",
        limit,
    )
    return [dict(r) for r in rows]


async def delete_limits(conn: asyncpg.Connection, customer_ref: str) -> bool:
    done: str = await conn.execute(
        "DELETE FROM customer_limits WHERE customer_ref = $1", customer_ref
    )
    return done.endswith(" 1")


# -- the hot path's batched read ------------------------------------------------------


async def load_entities(conn: asyncpg.Connection, keys: Sequence[str]) -> list[asyncpg.Record]:
    """List entries and customer limits of every key (``"{kind}:{value_ref}"``) given,
    in one statement: rows of (key, what, reason, expires_at, night_pix_limit_cents,
    max_amount_cents), ``what`` being ``hot``, ``allow`` or ``limits``."""
    # The function (migration 0003) runs the join with a generic plan: see there.
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM rules_load_entities($1::text[])", keys
    )
    return rows
