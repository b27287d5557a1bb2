"""Everything authentication needs at run time, opened by the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import asyncpg
from starlette.types import Scope

from sankofa.auth.clients import ClientRegistry
from sankofa.auth.keys import build_keyring
from sankofa.auth.ratelimit import TokenBuckets
from sankofa.auth.tokens import Principal, TokenIssuer, TokenVerifier
from sankofa.engine.scorer import DB_DOWN
from sankofa.errors import HeadersTooLargeError, StorageUnavailableError, UnauthorizedError
from sankofa.settings import Settings

#: An Authorization header longer than this is refused (431) before anything in
#: it is decoded or parsed: a real token here is well under 2 KB.
MAX_AUTHORIZATION_BYTES: Final = 4096
#: Where the verified principal is left for the route (request.scope).
PRINCIPAL_SCOPE_KEY: Final = "sankofa.principal"
#: ... and who is calling, as the audit trail names it (api.routes.actor_of):
#: the client id, or the token's subject for an operator's or a provider's token.
ACTOR_SCOPE_KEY: Final = "sankofa.actor"


def bearer_token(scope: Scope) -> str:
    """The bearer token of the request's Authorization header, or 401/431."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if len(value) > MAX_AUTHORIZATION_BYTES:
                raise HeadersTooLargeError(
                    f"the Authorization header exceeds {MAX_AUTHORIZATION_BYTES} bytes"
                )
            if found is not None:
                raise UnauthorizedError("more than one Authorization header")
            found = value
    if found is None:
        raise UnauthorizedError("a bearer token is required", error=None)
    if found[:7].lower() != b"bearer ":
        raise UnauthorizedError("the Authorization scheme must be Bearer", error="invalid_request")
    token = found[7:].strip()
    if not token or not token.isascii():
        raise UnauthorizedError("the bearer token is empty or not ASCII")
    return token.decode("ascii")


@dataclass(frozen=True, slots=True)
class AuthService:
    enabled: bool
    issuer: TokenIssuer
    verifier: TokenVerifier
    clients: ClientRegistry
    #: Requests per client.
    limits: TokenBuckets
    #: Token requests per client id (each costs an scrypt check).
    token_limits: TokenBuckets

    async def authenticate(self, scope: Scope) -> tuple[Principal, frozenset[str]]:
        """The verified caller and the roles it holds now (a registered client's
        roles as they are today, which may be fewer than when its token was issued)."""
        principal = self.verifier.verify(bearer_token(scope))
        if principal.client_id is None:
            return principal, principal.roles
        try:
            client = await self.clients.lookup(principal.client_id)
        except DB_DOWN as exc:
            raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
        if client is None:
            raise UnauthorizedError("the token's client is no longer registered")
        return principal, principal.roles & client.roles

    def rate_of(self, principal: Principal) -> float | None:
        if principal.client_id is None:
            return None
        client = self.clients.get(principal.client_id)
        return None if client is None else client.rate_per_s

    def client_deleted(self, client_id: str) -> None:
        self.clients.forget(client_id)
        self.verifier.forget(lambda p: p.client_id == client_id)


def build_auth(settings: Settings, pool: asyncpg.Pool) -> AuthService:
    keyring = build_keyring(
        signing_kid=settings.jwt_kid,
        signing_secret=settings.jwt_secret.get_secret_value().encode(),
        issuer=settings.jwt_issuer,
        jwks_file=settings.jwks_file,
        jwks_issuer=settings.jwks_issuer,
    )
    return AuthService(
        enabled=settings.auth_enabled,
        issuer=TokenIssuer(
            keyring=keyring,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            default_ttl_s=settings.jwt_ttl_s,
            max_ttl_s=settings.jwt_max_ttl_s,
        ),
        verifier=TokenVerifier(
            keyring=keyring,
            audience=settings.jwt_audience,
            max_ttl_s=settings.jwt_max_ttl_s,
            leeway_s=settings.jwt_leeway_s,
            cache_size=settings.token_cache_size,
        ),
        clients=ClientRegistry(
            pool=pool, refresh_s=settings.auth_clients_refresh_s, timeout_s=settings.db_timeout_s
        ),
        limits=TokenBuckets(rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst),
        token_limits=TokenBuckets(
            rate_per_s=settings.token_requests_per_min / 60.0,
            burst=max(1.0, min(10.0, settings.token_requests_per_min)),
        ),
    )


@asynccontextmanager
async def open_auth(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[AuthService]:
    auth = build_auth(settings, pool)
    await auth.clients.start()
    try:
        yield auth
    finally:
        await auth.clients.stop()
