"""Authentication on: the service as production runs it, with a JWKS file holding
an RSA and an EC public key beside the HS256 signing secret, and helpers to
register clients and mint tokens (valid ones, and every kind of forged one)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from conftest import _with_state
from sankofa.api.app import create_app
from sankofa.auth.clients import Client, create_client
from sankofa.settings import Settings
from sankofa.store.db import migrate

SECRET = "auth-tests-signing-secret-" + "x" * 16
KID = "test-hs-1"
ISSUER = "sankofa-test"
AUDIENCE = "sankofa-test-api"
IDP_ISSUER = "https://idp.example.test"


def _b64(n: int, size: int = 0) -> str:
    raw = n.to_bytes(max(size, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class IdpKeys:
    rsa_private_pem: bytes
    rsa_public_pem: bytes
    ec_private_pem: bytes
    ec_public_pem: bytes
    jwks_path: Path


@pytest.fixture(scope="session")
def idp_keys(tmp_path_factory: pytest.TempPathFactory) -> IdpKeys:
    """An identity provider's RSA (RS256) and EC (ES256) keys; the public halves
    in a JWKS file, as an operator would configure them."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    priv = serialization.PrivateFormat.PKCS8
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    nopw = serialization.NoEncryption()
    rn = rsa_key.public_key().public_numbers()
    en = ec_key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": "idp-rsa",
                "alg": "RS256",
                "use": "sig",
                "n": _b64(rn.n),
                "e": _b64(rn.e),
            },
            {
                "kty": "EC",
                "kid": "idp-ec",
                "alg": "ES256",
                "crv": "P-256",
                "x": _b64(en.x, 32),
                "y": _b64(en.y, 32),
            },
        ]
    }
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    return IdpKeys(
        rsa_private_pem=rsa_key.private_bytes(pem, priv, nopw),
        rsa_public_pem=rsa_key.public_key().public_bytes(pem, pub),
        ec_private_pem=ec_key.private_bytes(pem, priv, nopw),
        ec_public_pem=ec_key.public_key().public_bytes(pem, pub),
        jwks_path=path,
    )


@pytest.fixture
def auth_settings(settings_factory: Any, idp_keys: IdpKeys) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_required": True,
            "jwt_secret": SECRET,
            "jwt_kid": KID,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwks_file": idp_keys.jwks_path,
            "jwks_issuer": IDP_ISSUER,
        }
        values.update(overrides)
        s: Settings = settings_factory(**values)
        return s

    return make


@dataclass
class AuthApp:
    client: httpx.AsyncClient
    services: Any


@pytest.fixture
async def auth_app(auth_settings: Callable[..., Settings]) -> AsyncIterator[AuthApp]:
    """The real app, authentication on, lifespan entered, over httpx in process."""
    app = create_app(auth_settings())
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
            yield AuthApp(client=c, services=state["services"])


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for this service's own key, with overrides (None removes one)."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "tester",
        "iat": now,
        "exp": now + 300,
        "roles": ["scorer", "analyst", "admin", "auditor"],
    }
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def sign(
    payload: dict[str, Any], *, key: str | bytes = SECRET, alg: str = "HS256", kid: str | None = KID
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    token: str = jwt.encode(payload, key, algorithm=alg, headers=headers)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def role_token(*roles: str, **overrides: Any) -> str:
    return sign(claims(roles=list(roles), **overrides))


@pytest.fixture
async def register(
    database_url: str,
) -> AsyncIterator[Callable[..., Any]]:
    """Register clients with unique names; deleted afterwards."""
    conn = await asyncpg.connect(database_url)
    await migrate(conn)
    made: list[str] = []

    async def make(*roles: str, rate_per_s: float | None = None) -> tuple[Client, str]:
        client, secret = await create_client(
            conn, name=f"t-{secrets.token_hex(4)}", roles=roles, rate_per_s=rate_per_s
        )
        made.append(client.client_id)
        return client, secret

    try:
        yield make
    finally:
        await conn.execute("DELETE FROM auth_clients WHERE client_id = ANY($1::text[])", made)
        await conn.close()


TX = {
    "transaction_id": "auth-tx-1",
    "timestamp": "2018-04-01T10:00:00-03:00",
    "amount": "10.00",
    "customer_id": "c-1",
    "terminal_id": "t-1",
}
