"""The key ring: every key the service trusts, by ``kid``, each with the one
algorithm it may be used with.

Pinning the algorithm to the key (never taking it from the token's header) is
what defeats ``alg: none`` and the HS256-with-a-public-key confusion: a token
whose header names another algorithm than its key's is refused before any
signature is computed.

Keys come from settings: the signing secret (HS256, ``SANKOFA_JWT_KID``) and,
optionally, a JWKS file (``SANKOFA_JWKS_FILE``): an identity provider's public
RSA / EC keys, or a previous secret (kty ``oct``) kept during a rotation. The
file is read once at start; nothing is fetched over a network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

#: The algorithms a key may be pinned to, by JWK key type. Never "none".
ALGORITHMS: Final[Mapping[str, frozenset[str]]] = {
    "oct": frozenset({"HS256", "HS384", "HS512"}),
    "RSA": frozenset({"RS256", "RS384", "RS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
}
SIGNING_ALGORITHM: Final = "HS256"
#: RFC 7518 3.2: an HMAC key at least as long as the hash output.
MIN_OCT_BYTES: Final = 32
#: Below this an RSA key is breakable (NIST SP 800-131A).
MIN_RSA_BITS: Final = 2048


class KeyConfigError(ValueError):
    """The key configuration cannot be used (refused at start)."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str
    #: The only algorithm a token under this kid may use.
    alg: str
    key: Key
    #: The ``iss`` tokens under this key must carry.
    issuer: str


@dataclass(frozen=True, slots=True)
class KeyRing:
    signing_kid: str
    signing_secret: bytes
    keys: Mapping[str, VerifyKey]

    def get(self, kid: str) -> VerifyKey | None:
        return self.keys.get(kid)


def _b64len(text: str) -> int:
    return len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _jwk_key(entry: Any, issuer: str, where: str) -> VerifyKey:
    if not isinstance(entry, dict):
        raise KeyConfigError(f"{where}: each key must be a JSON object")
    kid, kty, alg = entry.get("kid"), entry.get("kty"), entry.get("alg")
    if not isinstance(kid, str) or not kid:
        raise KeyConfigError(f"{where}: every key needs a kid")
    if not isinstance(kty, str) or kty not in ALGORITHMS:
        raise KeyConfigError(f"{where} kid {kid}: kty must be one of {sorted(ALGORITHMS)}")
    if alg not in ALGORITHMS[kty]:
        raise KeyConfigError(
            f"{where} kid {kid}: alg must be pinned to one of {sorted(ALGORITHMS[kty])}"
        )
    if entry.get("use", "sig") != "sig":
        raise KeyConfigError(f"{where} kid {kid}: only signature keys (use sig) are accepted")
    if kty in ("RSA", "EC") and "d" in entry:
        raise KeyConfigError(f"{where} kid {kid}: a verification key set holds public keys only")
    try:
        if kty == "oct" and _b64len(str(entry.get("k", ""))) < MIN_OCT_BYTES:
            raise KeyConfigError(f"{where} kid {kid}: an oct key needs at least 32 bytes")
        if kty == "RSA" and _b64len(str(entry.get("n", ""))) * 8 < MIN_RSA_BITS:
            raise KeyConfigError(f"{where} kid {kid}: an RSA key needs at least 2048 bits")
        key = jwk.construct(entry, alg)
    except (JOSEError, ValueError, TypeError) as exc:
        if isinstance(exc, KeyConfigError):
            raise
        raise KeyConfigError(f"{where} kid {kid}: not a usable key ({exc})") from None
    return VerifyKey(kid=kid, alg=alg, key=key, issuer=issuer)


def load_jwks(path: Path, issuer: str) -> dict[str, VerifyKey]:
    """The keys of a JWKS file (``{"keys": [...]}``), by kid."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyConfigError(f"{path}: cannot read a JWKS document ({exc})") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise KeyConfigError(f"{path}: a JWKS document is an object with a 'keys' list")
    out: dict[str, VerifyKey] = {}
    for i, entry in enumerate(entries):
        key = _jwk_key(entry, issuer, f"{path} keys[{i}]")
        if key.kid in out:
            raise KeyConfigError(f"{path}: kid {key.kid} appears twice")
        out[key.kid] = key
    return out


def build_keyring(
    *,
    signing_kid: str,
    signing_secret: bytes,
    issuer: str,
    jwks_file: Path | None = None,
    jwks_issuer: str | None = None,
) -> KeyRing:
    if len(signing_secret) < MIN_OCT_BYTES:
        # Development's default is long enough; settings refuse short ones where it matters.
        raise KeyConfigError("the signing secret must be at least 32 bytes")
    own = VerifyKey(
        kid=signing_kid,
        alg=SIGNING_ALGORITHM,
        key=jwk.construct(signing_secret, SIGNING_ALGORITHM),
        issuer=issuer,
    )
    keys = {signing_kid: own}
    if jwks_file is not None:
        extra = load_jwks(jwks_file, jwks_issuer or issuer)
        if signing_kid in extra:
            raise KeyConfigError(f"{jwks_file}: kid {signing_kid} is the signing key's own")
        keys.update(extra)
    return KeyRing(signing_kid=signing_kid, signing_secret=signing_secret, keys=keys)
