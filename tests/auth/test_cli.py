"""``sankofa client create | delete | list`` and ``sankofa token``, as operators run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg

from auth.conftest import AUDIENCE, ISSUER, KID, SECRET, AuthApp, bearer


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(
        SANKOFA_ENVIRONMENT="test",
        SANKOFA_DATABASE_URL=database_url,
        SANKOFA_JWT_SECRET=SECRET,
        SANKOFA_JWT_KID=KID,
        SANKOFA_JWT_ISSUER=ISSUER,
        SANKOFA_JWT_AUDIENCE=AUDIENCE,
        **extra,
    )
    return env


def _sankofa(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sankofa.cli", *args],
        env=_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_client_create_prints_the_secret_once_and_it_gets_a_token(
    auth_app: AuthApp, database_url: str, db: asyncpg.Connection
) -> None:
    made = _sankofa(
        database_url,
        "client",
        "create",
        "--name",
        "cli-one",
        "--role",
        "analyst",
        "scorer",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert out["roles"] == ["analyst", "scorer"]
    try:
        stored = await db.fetchval(
            "SELECT secret_hash FROM auth_clients WHERE client_id = $1", out["client_id"]
        )
        assert out["client_secret"] not in stored
        listed = _sankofa(database_url, "client", "list")
        assert out["client_secret"] not in listed.stdout
        assert out["client_id"] in listed.stdout
        again = _sankofa(database_url, "client", "create", "--name", "cli-one", "--role", "scorer")
        assert again.returncode == 1 and "already exists" in again.stderr
        resp = await auth_app.client.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(out["client_id"], out["client_secret"]),
        )
        token = resp.json()["access_token"]
        read = await auth_app.client.get("/v1/transactions/x-1", headers=bearer(token))
        assert read.status_code == 404
    finally:
        gone = _sankofa(database_url, "client", "delete", "cli-one")
    assert gone.returncode == 0, gone.stderr
    assert await db.fetchval("SELECT count(*) FROM auth_clients WHERE name = 'cli-one'") == 0
    await auth_app.services.auth.clients.refresh()
    read = await auth_app.client.get("/v1/transactions/x-1", headers=bearer(token))
    assert read.status_code == 401
    assert _sankofa(database_url, "client", "delete", "cli-one").returncode == 1


def test_client_create_refuses_unknown_roles(database_url: str) -> None:
    made = _sankofa(database_url, "client", "create", "--name", "x", "--role", "root")
    assert made.returncode == 2 and "invalid choice" in made.stderr


async def test_token_prints_a_token_the_service_accepts(
    auth_app: AuthApp, database_url: str
) -> None:
    got = _sankofa(database_url, "token", "--role", "analyst", "--ttl", "120")
    assert got.returncode == 0, got.stderr
    token = got.stdout.strip()
    assert token.count(".") == 2
    ok = await auth_app.client.get("/v1/transactions/x-1", headers=bearer(token))
    assert ok.status_code == 404
    denied = await auth_app.client.get("/v1/clients", headers=bearer(token))
    assert denied.status_code == 403


def test_token_refuses_a_ttl_above_the_cap(database_url: str) -> None:
    got = _sankofa(database_url, "token", "--role", "scorer", "--ttl", "999999")
    assert got.returncode == 2 and "JWT_MAX_TTL_S" in got.stderr


def test_token_refuses_the_default_secret_where_auth_is_on(database_url: str) -> None:
    env = _env(database_url, SANKOFA_AUTH_REQUIRED="true")
    del env["SANKOFA_JWT_SECRET"]
    got = subprocess.run(
        [sys.executable, "-m", "sankofa.cli", "token", "--role", "scorer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode != 0 and "SANKOFA_JWT_SECRET" in got.stderr


def test_token_warns_when_signed_with_the_development_secret(database_url: str) -> None:
    """Development mode, no secret set: the token is printed, with a warning on
    stderr (a service that has a secret of its own would answer it 401)."""
    env = _env(database_url)
    del env["SANKOFA_JWT_SECRET"]
    got = subprocess.run(
        [sys.executable, "-m", "sankofa.cli", "token", "--role", "scorer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0 and got.stdout.count(".") == 2
    assert "SANKOFA_JWT_SECRET is not set" in got.stderr
    with_secret = _sankofa(database_url, "token", "--role", "scorer")
    assert with_secret.returncode == 0 and "not set" not in with_secret.stderr
