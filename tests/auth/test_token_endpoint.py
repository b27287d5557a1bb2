"""POST /v1/oauth/token: client credentials as RFC 6749 has them, and what it refuses."""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg

from auth.conftest import AUDIENCE, ISSUER, KID, AuthApp, bearer

TOKEN = "/v1/oauth/token"


def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return out


async def test_form_with_basic_credentials_gets_a_token_that_works(
    auth_app: AuthApp, register: Any
) -> None:
    client, secret = await register("analyst", "scorer")
    resp = await auth_app.client.post(
        TOKEN, data={"grant_type": "client_credentials"}, auth=(client.client_id, secret)
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "analyst scorer"
    claims = _claims(body["access_token"])
    assert claims["sub"] == claims["cid"] == client.client_id
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 900
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": KID, "typ": "JWT"}
    read = await auth_app.client.get("/v1/transactions/x-1", headers=bearer(body["access_token"]))
    assert read.status_code == 404


async def test_form_with_credentials_in_the_body(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("scorer")
    resp = await auth_app.client.post(
        TOKEN,
        data={
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "client_secret": secret,
        },
    )
    assert resp.status_code == 200, resp.text


async def test_json_body(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("scorer")
    resp = await auth_app.client.post(
        TOKEN,
        json={
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "client_secret": secret,
        },
    )
    assert resp.status_code == 200, resp.text


async def test_scope_narrows_the_roles(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("analyst", "scorer")
    resp = await auth_app.client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "scope": "scorer"},
        auth=(client.client_id, secret),
    )
    assert resp.json()["scope"] == "scorer"
    token = resp.json()["access_token"]
    assert _claims(token)["roles"] == ["scorer"]
    read = await auth_app.client.get("/v1/transactions/x-1", headers=bearer(token))
    assert read.status_code == 403


async def test_scope_beyond_the_clients_roles_is_invalid_scope(
    auth_app: AuthApp, register: Any
) -> None:
    client, secret = await register("scorer")
    resp = await auth_app.client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "scope": "scorer admin"},
        auth=(client.client_id, secret),
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_scope"


async def test_wrong_secret_is_invalid_client(auth_app: AuthApp, register: Any) -> None:
    client, _ = await register("scorer")
    resp = await auth_app.client.post(
        TOKEN, data={"grant_type": "client_credentials"}, auth=(client.client_id, "wrong")
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Basic")


async def test_unknown_client_is_the_same_invalid_client(auth_app: AuthApp) -> None:
    for cid in ("cl_0000000000000000", "not-an-id"):
        resp = await auth_app.client.post(
            TOKEN, data={"grant_type": "client_credentials"}, auth=(cid, "whatever")
        )
        assert resp.status_code == 401
        assert resp.json()["detail"] == "unknown client or wrong secret"


async def test_other_grants_are_unsupported(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("scorer")
    resp = await auth_app.client.post(
        TOKEN, data={"grant_type": "password"}, auth=(client.client_id, secret)
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


async def test_malformed_requests_are_invalid_request(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("scorer")
    cases: list[dict[str, Any]] = [
        {"content": b"scope=scorer"},  # no grant_type
        {"content": b"grant_type=client_credentials&grant_type=client_credentials"},
        {"json": ["not", "an", "object"]},
        {"json": {"grant_type": 7}},
    ]
    for kwargs in cases:
        if "content" in kwargs:
            kwargs["headers"] = {"content-type": "application/x-www-form-urlencoded"}
        resp = await auth_app.client.post(TOKEN, auth=(client.client_id, secret), **kwargs)
        assert resp.status_code == 400, (kwargs, resp.text)
        assert resp.json()["error"] == "invalid_request"
    both = await auth_app.client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_id": client.client_id},
        auth=(client.client_id, secret),
    )
    assert both.json()["error"] == "invalid_request"


async def test_wrong_media_type_and_large_body(auth_app: AuthApp) -> None:
    resp = await auth_app.client.post(
        TOKEN, content=b"grant_type=client_credentials", headers={"content-type": "text/plain"}
    )
    assert resp.status_code == 415
    resp = await auth_app.client.post(
        TOKEN,
        content=b"grant_type=client_credentials&x=" + b"a" * 5000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 413


async def test_token_requests_are_rate_limited_per_client(
    auth_settings: Any, register: Any
) -> None:
    import httpx

    from conftest import _with_state
    from sankofa.api.app import create_app

    app = create_app(auth_settings(token_requests_per_min=2.0))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            client, secret = await register("scorer")
            statuses = [
                (
                    await c.post(
                        TOKEN,
                        data={"grant_type": "client_credentials"},
                        auth=(client.client_id, secret),
                    )
                )
                for _ in range(3)
            ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[-1].headers["retry-after"]) >= 1


async def test_secret_is_stored_as_an_scrypt_hash(register: Any, db: asyncpg.Connection) -> None:
    client, secret = await register("scorer")
    stored = await db.fetchval(
        "SELECT secret_hash FROM auth_clients WHERE client_id = $1", client.client_id
    )
    assert stored.startswith("scrypt$16384$8$1$")
    assert secret not in stored


async def test_token_endpoint_works_in_development_mode(client: Any, register: Any) -> None:
    made, secret = await register("scorer")
    resp = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    )
    assert resp.status_code == 200


async def test_token_requests_are_rate_limited_in_all(auth_settings: Any) -> None:
    # Unknown ids, each new: only the limit on all ids together holds them back.
    import httpx

    from conftest import _with_state
    from sankofa.api.app import create_app

    app = create_app(auth_settings(token_requests_per_s_total=0.01, token_requests_per_min=2.0))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            statuses = [
                (
                    await c.post(
                        TOKEN,
                        data={"grant_type": "client_credentials"},
                        auth=(f"cl_{i:016x}", "guess"),
                    )
                ).status_code
                for i in range(4)
            ]
    assert statuses == [401, 401, 429, 429]
