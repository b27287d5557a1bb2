"""The audit trail: what is recorded, the chain, tamper detection, and the grants."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from sankofa import cli
from sankofa.store import audit
from sankofa.store.db import migrate
from tests_support import tx


def _url_with(url: str, *, database: str | None = None, user: str | None = None) -> str:
    scheme, _, rest = url.partition("://")
    creds, _, hostpart = rest.rpartition("@")
    host, _, dbq = hostpart.partition("/")
    db, _, query = dbq.partition("?")
    out = f"{scheme}://{user or creds}@{host}/{database or db}"
    return out + (f"?{query}" if query else "")


async def _trail(conn: asyncpg.Connection, after: int = 0) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT seq, payload FROM audit_log WHERE seq > $1 ORDER BY seq", after)
    return [orjson.loads(r["payload"]) for r in rows]


async def _head(conn: asyncpg.Connection) -> int:
    seq: int = await conn.fetchval("SELECT seq FROM audit_head")
    return seq


async def test_a_decision_batch_is_one_record_with_its_ids_and_digest(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    before = await _head(db)
    body = {"transactions": [tx(i, customer_id=f"c{i}") for i in range(5)]}
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    records = [p for p in await _trail(db, before) if p["kind"] == "decision_batch"]
    ids = [t["transaction_id"] for t in body["transactions"]]
    assert len(records) == 1 and records[0]["details"]["count"] == 5
    listed = records[0]["details"]["transaction_ids"]
    assert sorted(listed) == sorted(ids)
    row = await db.fetchrow(audit._DIGEST_SQL, listed)
    assert row["n"] == 5 and records[0]["details"]["digest"] == row["digest"]
    # The digest covers the decisions: another decision gives another digest.
    tr = db.transaction()
    await tr.start()
    try:
        await db.execute(
            "UPDATE transactions SET decision = 'decline' WHERE transaction_id = $1", ids[0]
        )
        assert (await db.fetchrow(audit._DIGEST_SQL, listed))["digest"] != row["digest"]
    finally:
        await tr.rollback()
    # A replay stores nothing and records nothing.
    seq = await _head(db)
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200 and all(d["replayed"] for d in r.json()["results"])
    assert await _head(db) == seq


async def test_labels_are_recorded_in_their_transaction(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    assert (await client.post("/v1/transactions", json=tx(1))).status_code == 200
    before = await _head(db)
    r = await client.post(
        "/v1/labels", json={"labels": [{"transaction_id": "tx-1", "fraud": True}]}
    )
    assert r.status_code == 200, r.text
    (rec,) = await _trail(db, before)
    assert rec["kind"] == "labels"
    assert rec["details"]["transaction_ids"] == ["tx-1"] and rec["details"]["fraud"] == ["tx-1"]
    # A refused label post (unknown id) records nothing: same transaction.
    r = await client.post(
        "/v1/labels", json={"labels": [{"transaction_id": "nope", "fraud": True}]}
    )
    assert r.status_code == 422
    assert await _head(db) == before + 1


async def test_record_hook_and_concurrent_writers_keep_one_chain(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:
        before = await pool.fetchval("SELECT seq FROM audit_head")

        async def writer(w: int) -> list[int]:
            seqs = []
            for i in range(25):
                async with pool.acquire() as conn, conn.transaction():
                    seqs.append(await audit.record(conn, "client.create", f"w{w}", {"i": i}))
            return seqs

        got = await asyncio.gather(*(writer(w) for w in range(4)))
        seqs = sorted(s for g in got for s in g)
        assert seqs == list(range(before + 1, before + 101))
        async with pool.acquire() as conn:
            rep = await audit.verify(conn)
        assert rep.ok, rep.as_dict()
        with pytest.raises(ValueError):
            async with pool.acquire() as conn:
                await audit.record(conn, "Bad Kind", None, {})
    finally:
        await pool.close()


async def test_a_rolled_back_change_leaves_no_record(db: asyncpg.Connection) -> None:
    before = await _head(db)
    with contextlib.suppress(RuntimeError):
        async with db.transaction():
            await audit.record(db, "rules.change", "tester", {"rule": 1})
            raise RuntimeError("the change failed")
    assert await _head(db) == before
    assert (await audit.verify(db)).ok


# -- Tampering, each kind caught. Done as a superuser in a database of its own.


@pytest.fixture
def fresh_db(server_urls: tuple[str, str]) -> Iterator[str]:
    admin = server_urls[0]
    name = f"sankofa_audit_{os.getpid()}_{secrets.token_hex(3)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = _url_with(admin, database=name)

    async def setup() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            for i in range(6):
                async with conn.transaction():
                    await audit.record(conn, "rules.change", "admin-1", {"rule": i})
        finally:
            await conn.close()

    asyncio.run(setup())
    try:
        yield url
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _tamper(url: str, *sqls: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            # A superuser can switch the append-only triggers off; the grants
            # (tested below) are what stops the service's own role.
            await conn.execute("SET session_replication_role = replica")
            for sql in sqls:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _verify(url: str, **kw: Any) -> audit.VerifyReport:
    async def run() -> audit.VerifyReport:
        conn = await asyncpg.connect(url)
        try:
            return await audit.verify(conn, **kw)
        finally:
            await conn.close()

    return asyncio.run(run())


def _cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("SANKOFA_DATABASE_URL", url)
    return cli.main(["audit", *args])


def test_an_intact_trail_verifies(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rep = _verify(fresh_db)
    assert rep.ok and rep.records == 6 and rep.head_seq == 6
    assert _cli(fresh_db, monkeypatch, "verify") == 0
    assert "intact: 6 records" in capsys.readouterr().out


def test_an_altered_record_is_caught(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(
        fresh_db,
        "UPDATE audit_log SET payload = replace(payload, 'admin-1', 'admin-2') WHERE seq = 3",
    )
    rep = _verify(fresh_db)
    assert [(p.seq, p.kind) for p in rep.problems] == [(3, "altered")]
    assert _cli(fresh_db, monkeypatch, "verify") == 1
    assert "altered: record 3" in capsys.readouterr().out


def test_an_altered_record_with_its_hash_recomputed_breaks_the_next_link(fresh_db: str) -> None:
    _tamper(
        fresh_db,
        "UPDATE audit_log SET payload = replace(payload, 'admin-1', 'admin-2') WHERE seq = 3",
        "UPDATE audit_log SET hash = sha256(prev_hash || convert_to(payload, 'UTF8')) WHERE seq = 3",
    )
    rep = _verify(fresh_db)
    assert [(p.seq, p.kind) for p in rep.problems] == [(4, "broken-link")]


def test_a_removed_record_is_caught(fresh_db: str) -> None:
    _tamper(fresh_db, "DELETE FROM audit_log WHERE seq = 2")
    rep = _verify(fresh_db)
    kinds = {(p.seq, p.kind) for p in rep.problems}
    assert (3, "removed") in kinds and (3, "broken-link") in kinds


def test_removed_last_records_are_caught_by_the_head(fresh_db: str) -> None:
    _tamper(fresh_db, "DELETE FROM audit_log WHERE seq >= 5")
    rep = _verify(fresh_db)
    assert [p.kind for p in rep.problems] == ["head"]


def test_a_truncated_trail_is_caught(fresh_db: str) -> None:
    _tamper(fresh_db, "TRUNCATE audit_log")
    assert [p.kind for p in _verify(fresh_db).problems] == ["head"]


def test_reordered_records_are_caught(fresh_db: str) -> None:
    # Swap records 2 and 4 wholesale (each keeps its own content and hashes).
    _tamper(
        fresh_db,
        "UPDATE audit_log SET seq = -seq WHERE seq IN (2, 4)",
        "UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 4 ELSE 2 END WHERE seq < 0",
    )
    rep = _verify(fresh_db)
    kinds = {(p.seq, p.kind) for p in rep.problems}
    assert (2, "reordered") in kinds and (4, "reordered") in kinds
    assert any(k == "broken-link" for _, k in kinds)


def test_a_rewritten_chain_is_caught_by_an_anchor(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(fresh_db, monkeypatch, "head") == 0
    anchor = capsys.readouterr().out.strip()
    assert anchor.startswith("6:")

    async def rewrite() -> None:
        # Someone past the grants and the triggers rewrites record 6 and the head.
        conn = await asyncpg.connect(fresh_db)
        try:
            await conn.execute("SET session_replication_role = replica")
            r = await conn.fetchrow("SELECT payload, prev_hash FROM audit_log WHERE seq = 6")
            payload = r["payload"].replace("admin-1", "admin-9")
            h = hashlib.sha256(bytes(r["prev_hash"]) + payload.encode()).digest()
            await conn.execute(
                "UPDATE audit_log SET payload = $1, hash = $2 WHERE seq = 6", payload, h
            )
            await conn.execute("UPDATE audit_head SET hash = $1", h)
        finally:
            await conn.close()

    asyncio.run(rewrite())
    assert _verify(fresh_db).ok  # the chain alone cannot tell
    assert _cli(fresh_db, monkeypatch, "verify", "--anchor", anchor) == 1
    assert "anchor" in capsys.readouterr().out


def test_an_altered_decision_is_caught_with_decisions(fresh_db: str) -> None:
    async def store() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            # As the COPY does: the statement trigger records the batch.
            await conn.execute(
                """
                INSERT INTO transactions (transaction_id, event_time, utc_offset_s, amount_cents,
                    currency, customer_ref, terminal_id, tx_type, content_hash, decision,
                    risk_score, risk_level, reasons, model_version, features, priority,
                    queue_ms, processing_ms, batch_size)
                SELECT 'd' || i, now(), 0, 100, 'BRL', 'c', 't', 'card', '\\x00', 'approve', 0.1,
                       'LOW', '{AMOUNT}', 'm@1', '\\x', 'normal', 0, 0, 3
                FROM generate_series(1, 3) i
                """
            )
        finally:
            await conn.close()

    asyncio.run(store())
    rep = _verify(fresh_db, decisions=True)
    assert rep.ok and rep.decision_batches_checked == 1
    _tamper(fresh_db, "UPDATE transactions SET decision = 'decline' WHERE transaction_id = 'd2'")
    rep = _verify(fresh_db, decisions=True)
    assert [p.kind for p in rep.problems] == ["decisions"]
    _tamper(fresh_db, "DELETE FROM transactions WHERE transaction_id = 'd3'")
    assert "missing" in _verify(fresh_db, decisions=True).problems[0].message


def test_the_owner_cannot_edit_the_trail_either(fresh_db: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            for sql in (
                "UPDATE audit_log SET payload = 'x' WHERE seq = 1",
                "DELETE FROM audit_log WHERE seq = 1",
                "TRUNCATE audit_log",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())
    assert _verify(fresh_db).ok


# -- The service's role: SELECT and audit_append only.


@pytest.fixture
async def app_role(database_url: str) -> AsyncIterator[str]:
    """A login role in sankofa_app (as a deployment would create), its URL."""
    role = f"sankofa_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        # As a deployment does: migrated by its owner first (which makes
        # sankofa_app and its grants), whatever test ran before this one.
        await migrate(admin)
        await admin.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE sankofa_app')
        yield _url_with(database_url, user=role)
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_the_service_role_cannot_update_or_delete_audit_rows(app_role: str) -> None:
    conn = await asyncpg.connect(app_role)
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        seq = await audit.record(conn, "token.issue", "client-1", {"kid": "k1"})
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE seq = $1", seq) == 1
        for sql in (
            f"UPDATE audit_log SET payload = 'x' WHERE seq = {seq}",
            f"DELETE FROM audit_log WHERE seq = {seq}",
            "TRUNCATE audit_log",
            "INSERT INTO audit_log VALUES (0, 'x', sha256(''), sha256(''))",
            "UPDATE audit_head SET seq = 0",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(sql)
        assert (await audit.verify(conn)).ok
    finally:
        await conn.close()


async def test_the_service_runs_as_its_role(settings_factory: Any, app_role: str) -> None:
    """Scoring, labels and erasure work with sankofa_app's rights alone."""
    from sankofa.api.app import create_app

    app = create_app(settings_factory(database_url=app_role))
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        c = httpx.AsyncClient(transport=transport, base_url="http://sankofa.test")
        r = await c.post("/v1/transactions/batch", json={"transactions": [tx(1), tx(2)]})
        assert r.status_code == 200, r.text
        r = await c.post(
            "/v1/labels", json={"labels": [{"transaction_id": "tx-1", "fraud": False}]}
        )
        assert r.status_code == 200, r.text
        r = await c.post("/v1/privacy/erasure", json={"customer_id": "cust-1"})
        assert r.status_code == 200, r.text
        assert r.json()["transactions_erased"] == 2
        await c.aclose()
