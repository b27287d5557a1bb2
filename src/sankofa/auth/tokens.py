"""Access tokens: issued as compact JWS (JWT), verified against the key ring.

A token is accepted only when all of these hold, else ``UnauthorizedError``:

* three dot-separated parts (a five-part JWE is refused: this service never
  decrypts tokens), a header naming a known ``kid``, the algorithm pinned to
  that key, and no ``crit`` header it would have to understand;
* a valid signature;
* ``exp``, ``iat``, ``iss``, ``aud`` and ``sub`` present; ``exp`` not passed,
  ``nbf`` (if any) reached, ``iat`` not in the future (each within the leeway);
  ``iss`` the key's issuer and ``aud`` this service's audience;
* a lifetime (``exp - iat``) within the cap.

Verified tokens are cached, bounded, until their ``exp``: a client sends the
same token for its whole life, so nearly every request costs a dictionary
look-up instead of a signature check (benchmarks/test_auth_verify.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from jose import jws, jwt
from jose.exceptions import JOSEError, JWTClaimsError

from sankofa.auth.keys import SIGNING_ALGORITHM, KeyRing
from sankofa.auth.roles import ROLES
from sankofa.errors import UnauthorizedError

#: Claims every token must carry.
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as a verified token says."""

    subject: str
    roles: frozenset[str]
    #: The registered client the token was issued to (claim ``cid``); None for an
    #: operator's token (``sankofa token``) or an identity provider's.
    client_id: str | None
    #: Unix time after which the token is refused.
    expires_at: float
    kid: str


class TokenIssuer:
    """Signs access tokens with the key ring's signing key."""

    def __init__(
        self,
        *,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        default_ttl_s: int,
        max_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < default_ttl_s <= max_ttl_s:
            raise ValueError("default_ttl_s must be > 0 and at most max_ttl_s")
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self._clock = clock

    def issue(
        self,
        *,
        subject: str,
        roles: Iterable[str],
        client_id: str | None = None,
        ttl_s: int | None = None,
    ) -> tuple[str, int]:
        """A signed token and its lifetime in seconds (capped at max_ttl_s)."""
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            raise ValueError("ttl_s must be > 0")
        ttl = min(ttl, self.max_ttl_s)
        role_list = sorted(set(roles))
        if not role_list or not set(role_list) <= ROLES:
            raise ValueError(f"roles must be a non-empty subset of {sorted(ROLES)}")
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(12),
            "roles": role_list,
            "scope": " ".join(role_list),
        }
        if client_id is not None:
            claims["cid"] = client_id
        token: str = jwt.encode(
            claims,
            self._keyring.signing_secret,
            algorithm=SIGNING_ALGORITHM,
            headers={"kid": self._keyring.signing_kid, "typ": "JWT"},
        )
        return token, ttl


def _roles_of(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("roles")
    if raw is None and isinstance(claims.get("scope"), str):
        raw = claims["scope"].split()
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(r for r in raw if isinstance(r, str) and r in ROLES)


class TokenVerifier:
    """Verifies bearer tokens; caches the verified ones until they expire."""

    def __init__(
        self,
        *,
        keyring: KeyRing,
        audience: str,
        max_ttl_s: int,
        leeway_s: int,
        cache_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_ttl_s <= 0 or leeway_s < 0 or cache_size < 0:
            raise ValueError("max_ttl_s must be > 0, leeway_s and cache_size >= 0")
        self._keyring = keyring
        self._audience = audience
        self._max_ttl_s = max_ttl_s
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._clock = clock
        # Insertion-ordered: the oldest entry goes first when full.
        self._cache: dict[str, Principal] = {}
        self.hits = 0
        self.misses = 0

    def verify(self, token: str) -> Principal:
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None:
            if now < hit.expires_at + self._leeway_s:
                self.hits += 1
                return hit
            del self._cache[token]
        self.misses += 1
        principal = self._verify(token, now)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[token] = principal
        return principal

    def forget(self, predicate: Callable[[Principal], bool]) -> None:
        """Drop cached tokens the predicate picks (a deleted client's)."""
        for token in [t for t, p in self._cache.items() if predicate(p)]:
            del self._cache[token]

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _verify(self, token: str, now: float) -> Principal:
        dots = token.count(".")
        if dots == 4:
            raise UnauthorizedError("encrypted tokens (JWE) are not accepted")
        if dots != 2:
            raise UnauthorizedError("the bearer token is not a JWT")
        try:
            header = jws.get_unverified_header(token)
        except JOSEError:
            raise UnauthorizedError("the token's header is not readable") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise UnauthorizedError("the token's header has no kid")
        key = self._keyring.get(kid)
        if key is None:
            raise UnauthorizedError("the token's kid names no key this service trusts")
        if header.get("alg") != key.alg:
            raise UnauthorizedError(f"key {kid} only verifies {key.alg} tokens")
        if "crit" in header:
            raise UnauthorizedError("the token has critical header parameters")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                audience=self._audience,
                issuer=key.issuer,
                options={
                    **{f"require_{c}": True for c in REQUIRED_CLAIMS},
                    # Times are checked below, on this verifier's clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
        except JWTClaimsError as exc:
            raise UnauthorizedError(f"the token's claims are refused: {exc}") from None
        except JOSEError as exc:
            raise UnauthorizedError(f"the token is not valid: {exc}") from None
        exp, iat, sub, nbf = claims["exp"], claims["iat"], claims["sub"], claims.get("nbf", 0)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat, nbf)):
            raise UnauthorizedError("exp, iat and nbf must be numbers")
        if now >= exp + self._leeway_s:
            raise UnauthorizedError("the token has expired")
        if nbf > now + self._leeway_s:
            raise UnauthorizedError("the token is not valid yet (nbf)")
        if iat > now + self._leeway_s:
            raise UnauthorizedError("the token was issued in the future")
        if exp - iat > self._max_ttl_s:
            raise UnauthorizedError(
                f"the token lives longer than the {self._max_ttl_s} s this service accepts"
            )
        if not isinstance(sub, str) or not sub:
            raise UnauthorizedError("the token's sub must be a non-empty string")
        cid = claims.get("cid")
        return Principal(
            subject=sub,
            roles=_roles_of(claims),
            client_id=cid if isinstance(cid, str) else None,
            expires_at=float(exp),
            kid=kid,
        )
