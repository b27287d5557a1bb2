"""Security events reach the audit trail: a token issue, a client's creation and
deletion (with the change, in its transaction); a refused token request does not."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from auth.conftest import AuthApp, bearer, role_token
from auth.test_cli import _sankofa


async def _records(db: asyncpg.Connection, kind: str, after: int) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT payload FROM audit_log WHERE seq > $1 ORDER BY seq", after)
    found = [json.loads(r["payload"]) for r in rows]
    return [r for r in found if r["kind"] == kind]


async def _head(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log"))


async def test_token_issue_is_recorded_and_a_refusal_is_not(
    auth_app: AuthApp, register: Any, db: asyncpg.Connection
) -> None:
    client, secret = await register("scorer")
    start = await _head(db)
    ok = await auth_app.client.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret),
    )
    assert ok.status_code == 200, ok.text
    bad = await auth_app.client.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret + "x"),
    )
    assert bad.status_code == 401
    issued = await _records(db, "token.issue", start)
    assert [r["actor"] for r in issued] == [client.client_id]
    assert issued[0]["details"]["roles"] == ["scorer"]
    assert ok.json()["access_token"] not in json.dumps(issued)
    assert await _records(db, "token.refused", start) == []


async def test_client_delete_over_http_is_recorded_with_who_did_it(
    auth_app: AuthApp, register: Any, db: asyncpg.Connection
) -> None:
    client, _ = await register("analyst")
    start = await _head(db)
    token = role_token("admin", sub="ops-1")
    resp = await auth_app.client.delete(f"/v1/clients/{client.client_id}", headers=bearer(token))
    assert resp.status_code == 204, resp.text
    deleted = await _records(db, "client.delete", start)
    assert len(deleted) == 1
    assert deleted[0]["actor"] == "ops-1"
    assert deleted[0]["details"]["client_id"] == client.client_id
    # Nothing to delete: no record.
    again = await auth_app.client.delete(f"/v1/clients/{client.client_id}", headers=bearer(token))
    assert again.status_code == 404
    assert len(await _records(db, "client.delete", start)) == 1


async def test_client_create_and_delete_from_the_cli_are_recorded(
    auth_app: AuthApp, database_url: str, db: asyncpg.Connection
) -> None:
    start = await _head(db)
    made = _sankofa(
        database_url, "client", "create", "--name", "cli-audit", "--role", "admin", "--json"
    )
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    gone = _sankofa(database_url, "client", "delete", out["client_id"])
    assert gone.returncode == 0, gone.stderr
    created = await _records(db, "client.create", start)
    deleted = await _records(db, "client.delete", start)
    assert [r["details"]["client_id"] for r in created] == [out["client_id"]]
    assert [r["details"]["client_id"] for r in deleted] == [out["client_id"]]
    assert out["client_secret"] not in json.dumps(created)


async def test_a_labels_record_names_the_calling_client(
    auth_app: AuthApp, db: asyncpg.Connection
) -> None:
    # rbac leaves the caller in the request for the audit trail (api.routes.actor_of).
    start = await _head(db)
    token = role_token("analyst", sub="analyst-desk-7")
    resp = await auth_app.client.post(
        "/v1/labels",
        json={"labels": [{"transaction_id": "no-such-tx", "fraud": True}]},
        headers=bearer(token),
    )
    assert resp.status_code == 422  # unknown transaction: nothing stored, nothing recorded
    assert await _records(db, "labels", start) == []
    scorer = role_token("scorer", sub="acquirer-3")
    tx = {
        "transaction_id": "actor-tx-1",
        "timestamp": "2018-04-01T10:00:00-03:00",
        "amount": "10.00",
        "customer_id": "c-1",
        "terminal_id": "t-1",
    }
    assert (
        await auth_app.client.post("/v1/transactions", json=tx, headers=bearer(scorer))
    ).status_code == 200
    resp = await auth_app.client.post(
        "/v1/labels",
        json={"labels": [{"transaction_id": "actor-tx-1", "fraud": True}]},
        headers=bearer(token),
    )
    assert resp.status_code == 200, resp.text
    assert [r["actor"] for r in await _records(db, "labels", start)] == ["analyst-desk-7"]
