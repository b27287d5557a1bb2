"""What a bearer token costs a request (`make bench`, or this file alone).

* cold: a full check (header, kid, signature, claims) of a token never seen,
  for this service's HS256 key and an identity provider's RS256 and ES256 keys;
* cached: the same token again, a bounded dictionary look-up until its exp;
* request: the whole dependency path with a cached token (Authorization
  header found and bounded, token looked up, client checked, roles
  intersected, rate taken), what every authenticated request pays.

Results are reported, never asserted.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Request
from jose import jwk, jwt
from starlette.responses import Response

from sankofa.auth.clients import Client, ClientRegistry
from sankofa.auth.keys import KeyRing, VerifyKey, build_keyring
from sankofa.auth.ratelimit import TokenBuckets
from sankofa.auth.service import AuthService
from sankofa.auth.tokens import TokenIssuer, TokenVerifier

SECRET = b"benchmark-signing-secret-0123456789abcdef"


def _ring() -> tuple[KeyRing, dict[str, bytes]]:
    base = build_keyring(signing_kid="hs", signing_secret=SECRET, issuer="sankofa")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    priv = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    keys = dict(base.keys)
    keys["rs"] = VerifyKey(
        "rs",
        "RS256",
        jwk.construct(rsa_key.public_key().public_bytes(pem, pub), "RS256"),
        "sankofa",
    )
    keys["es"] = VerifyKey(
        "es", "ES256", jwk.construct(ec_key.public_key().public_bytes(pem, pub), "ES256"), "sankofa"
    )
    private = {
        "rs": rsa_key.private_bytes(pem, priv, none),
        "es": ec_key.private_bytes(pem, priv, none),
    }
    return KeyRing(signing_kid="hs", signing_secret=SECRET, keys=keys), private


RING, PRIVATE = _ring()


def _token(kid: str, sub: str) -> str:
    now = int(time.time())
    claims = {
        "iss": "sankofa",
        "aud": "api",
        "sub": sub,
        "iat": now,
        "exp": now + 900,
        "roles": ["scorer"],
    }
    if kid == "hs":
        return str(jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "hs"}))
    alg = {"rs": "RS256", "es": "ES256"}[kid]
    return str(jwt.encode(claims, PRIVATE[kid], algorithm=alg, headers={"kid": kid}))


def _verifier(cache_size: int) -> TokenVerifier:
    return TokenVerifier(
        keyring=RING, audience="api", max_ttl_s=3600, leeway_s=30, cache_size=cache_size
    )


@pytest.mark.parametrize("kid", ["hs", "rs", "es"])
def test_verify_cold(benchmark: Any, kid: str) -> None:
    verifier = _verifier(cache_size=0)  # nothing cached: every call a full check
    token = _token(kid, "cold")
    benchmark(verifier.verify, token)
    assert verifier.hits == 0


def test_verify_cached(benchmark: Any) -> None:
    verifier = _verifier(cache_size=10_000)
    token = _token("hs", "cached")
    verifier.verify(token)
    benchmark(verifier.verify, token)
    assert verifier.misses == 1


def test_request_path_cached(benchmark: Any) -> None:
    """AuthService.authenticate + the rate bucket, for a registered client's token."""
    verifier = _verifier(cache_size=10_000)
    issuer = TokenIssuer(
        keyring=RING, issuer="sankofa", audience="api", default_ttl_s=900, max_ttl_s=3600
    )
    registry = ClientRegistry(pool=None, refresh_s=2.0, timeout_s=1.0)  # type: ignore[arg-type]
    from datetime import UTC, datetime

    client = Client("cl_0123456789abcdef", "bench", frozenset({"scorer"}), None, datetime.now(UTC))
    registry.learn(client)
    auth = AuthService(
        enabled=True,
        issuer=issuer,
        verifier=verifier,
        clients=registry,
        limits=TokenBuckets(rate_per_s=1e9, burst=1e9),
        token_limits=TokenBuckets(rate_per_s=1.0, burst=1),
    )
    token, _ = issuer.issue(subject=client.client_id, roles=["scorer"], client_id=client.client_id)
    scope = {
        "headers": [
            (b"host", b"sankofa"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ]
    }

    allowed = frozenset({"scorer"})

    async def once() -> None:
        principal, held = await auth.authenticate(scope)
        assert held & allowed
        auth.limits.take(principal.subject, auth.rate_of(principal))

    def run() -> None:
        coro = once()
        try:
            coro.send(None)  # completes without suspending: nothing awaits I/O on a hit
        except StopIteration:
            pass

    benchmark(run)


def test_client_secret_check(benchmark: Any) -> None:
    """The scrypt check a token request pays (deliberately slow: run in a thread)."""
    from sankofa.auth.kdf import hash_secret, verify_secret

    stored = hash_secret("a-client-secret")
    assert benchmark(verify_secret, "a-client-secret", stored)


# Request and Response at module level: the handlers' annotations are strings
# (``from __future__ import annotations``) that FastAPI resolves in this module's
# globals; imported inside the function, ``request`` was taken for a body field
# and every call answered 422.
def _route_app() -> Any:
    import types

    from fastapi import FastAPI

    from sankofa.auth.rbac import requires

    app = FastAPI()

    async def plain(request: Request) -> Response:
        return Response(b"{}")

    async def dep(request: Request) -> Response:
        return Response(b"{}")

    async def deco(request: Request) -> Response:
        return Response(b"{}")

    app.post("/plain")(plain)
    app.post("/dependency", dependencies=[requires("scorer")])(dep)
    app.post("/decorator")(requires("scorer")(deco))
    services = types.SimpleNamespace(auth=types.SimpleNamespace(enabled=False))
    return app, services


ROUTE_APP, ROUTE_SERVICES = _route_app()


@pytest.mark.parametrize("path", ["/plain", "/dependency", "/decorator"])
def test_route_declaration_cost(benchmark: Any, path: str) -> None:
    """100 requests through the whole ASGI app (auth off: development mode), per round:
    what declaring the roles costs a request, as a dependency or as a decorator."""
    import asyncio

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def hundred() -> None:
        for _ in range(100):
            scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "scheme": "http",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json")],
                "server": ("t", 80),
                "client": ("c", 1),
                "http_version": "1.1",
                "state": {"services": ROUTE_SERVICES},
                "app": ROUTE_APP,
            }
            await ROUTE_APP(scope, receive, send)

    loop = asyncio.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(hundred()))
    finally:
        loop.close()
    assert set(sent) == {200}
