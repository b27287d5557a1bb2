"""``sankofa replay`` and ``sankofa loadtest`` against a service that requires tokens:
with a client id and secret, with a token, and without (refused)."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from auth.conftest import AUDIENCE, ISSUER, KID, SECRET
from conftest import FIXTURES, LiveServer, server_env
from sankofa.auth.clients import create_client
from sankofa.cli import main
from sankofa.settings import Settings

SLICE = FIXTURES / "handbook-slice.csv.gz"
AUTH_ENV = {
    "SANKOFA_AUTH_REQUIRED": "true",
    "SANKOFA_JWT_SECRET": SECRET,
    "SANKOFA_JWT_KID": KID,
    "SANKOFA_JWT_ISSUER": ISSUER,
    "SANKOFA_JWT_AUDIENCE": AUDIENCE,
}


@pytest.fixture
def auth_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(server_env(settings, **AUTH_ENV), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _replay(url: str, report: Path, *auth: str) -> int:
    return main(
        [
            "replay", "--input", str(SLICE), "--url", url,
            "--from", "2018-06-20", "--to", "2018-06-21",
            "--batch", "50", "--concurrency", "2",
            "--no-progress", "--report", str(report), *auth,
        ]
    )  # fmt: skip


def _register(database_url: str, *roles: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        conn = await asyncpg.connect(database_url)
        try:
            client, secret = await create_client(
                conn, name=f"own-{secrets.token_hex(4)}", roles=roles
            )
        finally:
            await conn.close()
        return client.client_id, secret

    return asyncio.run(go())


def test_replay_with_client_credentials(
    auth_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    client_id, secret = _register(database_url, "scorer")
    report = tmp_path / "r.json"
    code = _replay(auth_server.url, report, "--client-id", client_id, "--client-secret", secret)
    rep = json.loads(report.read_text())
    assert code == 0, rep["errors_by_status"]
    assert rep["errors_by_status"] == {}
    assert rep["accepted"] == rep["sent"] > 0
    assert rep["label_errors"] == {}


def test_replay_without_a_token_fails(auth_server: LiveServer, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert _replay(auth_server.url, report) == 1
    assert "401" in json.loads(report.read_text())["errors_by_status"]


def test_replay_refuses_half_credentials(auth_server: LiveServer, tmp_path: Path) -> None:
    assert _replay(auth_server.url, tmp_path / "r.json", "--client-id", "cl_x") == 2


def test_loadtest_with_a_token_from_sankofa_token(
    auth_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    env = server_env(settings, **AUTH_ENV)
    token = subprocess.run(
        [sys.executable, "-m", "sankofa.cli", "token", "--role", "scorer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    rc = main(
        [
            "loadtest", "run", "--url", auth_server.url,
            "--rate", "20", "--duration", "1", "--connections", "2",
            "--input", str(SLICE), "--out", str(tmp_path), "--label", "auth",
            "--no-plots", "--quiet", "--token", token,
        ]
    )  # fmt: skip
    assert rc == 0
    overall = json.loads((tmp_path / "auth.json").read_text())["overall"]
    assert overall["requests"] > 0
    assert overall["ok"] == overall["requests"], overall["errors_by_status"]


def test_loadtest_without_a_token_gets_401s(auth_server: LiveServer, tmp_path: Path) -> None:
    rc = main(
        [
            "loadtest", "run", "--url", auth_server.url,
            "--rate", "20", "--duration", "1", "--connections", "2",
            "--input", str(SLICE), "--out", str(tmp_path), "--label", "noauth",
            "--no-plots", "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    overall = json.loads((tmp_path / "noauth.json").read_text())["overall"]
    assert overall["ok"] == 0 and "401" in overall["errors_by_status"]
