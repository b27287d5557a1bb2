"""Issuing and verifying tokens without a server: the key ring, the lifetime
cap, the cache, rotation by kid."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from auth.conftest import SECRET, IdpKeys
from sankofa.auth.keys import KeyConfigError, build_keyring, load_jwks
from sankofa.auth.tokens import TokenIssuer, TokenVerifier
from sankofa.errors import UnauthorizedError


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _pair(
    clock: Clock,
    *,
    secret: str = SECRET,
    kid: str = "k1",
    jwks: Path | None = None,
    cache: int = 100,
) -> tuple[TokenIssuer, TokenVerifier]:
    ring = build_keyring(
        signing_kid=kid, signing_secret=secret.encode(), issuer="iss", jwks_file=jwks
    )
    issuer = TokenIssuer(
        keyring=ring, issuer="iss", audience="aud", default_ttl_s=60, max_ttl_s=300, clock=clock
    )
    verifier = TokenVerifier(
        keyring=ring, audience="aud", max_ttl_s=300, leeway_s=5, cache_size=cache, clock=clock
    )
    return issuer, verifier


def test_issue_then_verify() -> None:
    clock = Clock()
    issuer, verifier = _pair(clock)
    token, ttl = issuer.issue(subject="s", roles=["scorer"], client_id="cl_0123456789abcdef")
    assert ttl == 60
    p = verifier.verify(token)
    assert (p.subject, p.roles, p.client_id, p.kid) == (
        "s",
        frozenset({"scorer"}),
        "cl_0123456789abcdef",
        "k1",
    )
    assert p.expires_at == clock.t + 60


def test_issue_caps_the_lifetime() -> None:
    issuer, _ = _pair(Clock())
    _, ttl = issuer.issue(subject="s", roles=["scorer"], ttl_s=10_000)
    assert ttl == 300


def test_issue_refuses_unknown_roles() -> None:
    issuer, _ = _pair(Clock())
    with pytest.raises(ValueError):
        issuer.issue(subject="s", roles=["root"])


def test_cached_token_costs_no_second_verification_and_expires_with_the_token() -> None:
    clock = Clock()
    issuer, verifier = _pair(clock)
    token, _ = issuer.issue(subject="s", roles=["scorer"])
    verifier.verify(token)
    verifier.verify(token)
    assert (verifier.misses, verifier.hits) == (1, 1)
    clock.t += 60 + 5 + 1  # past exp and the leeway
    with pytest.raises(UnauthorizedError, match="expired"):
        verifier.verify(token)
    assert verifier.cached == 0


def test_the_cache_is_bounded() -> None:
    clock = Clock()
    issuer, verifier = _pair(clock, cache=3)
    tokens = [issuer.issue(subject=f"s{i}", roles=["scorer"])[0] for i in range(10)]
    for t in tokens:
        verifier.verify(t)
    assert verifier.cached == 3


def test_a_refused_token_is_not_cached() -> None:
    clock = Clock()
    issuer, verifier = _pair(clock)
    token, _ = issuer.issue(subject="s", roles=["scorer"])
    bad = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for _ in range(2):
        with pytest.raises(UnauthorizedError):
            verifier.verify(bad)
    assert verifier.cached == 0 and verifier.misses == 2


def test_rotation_old_secret_kept_in_the_jwks_file_still_verifies(tmp_path: Path) -> None:
    clock = Clock()
    old_issuer, _ = _pair(clock, secret=SECRET, kid="k1")
    old_token, _ = old_issuer.issue(subject="s", roles=["scorer"])
    jwks = tmp_path / "jwks.json"
    k = base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("=")
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]}))
    new_issuer, verifier = _pair(clock, secret="n" * 40, kid="k2", jwks=jwks)
    new_token, _ = new_issuer.issue(subject="s", roles=["scorer"])
    assert verifier.verify(old_token).kid == "k1"
    assert verifier.verify(new_token).kid == "k2"
    # Without the old key, the old token is refused: its kid is unknown.
    _, strict = _pair(clock, secret="n" * 40, kid="k2")
    with pytest.raises(UnauthorizedError, match="kid"):
        strict.verify(old_token)


def _write(tmp_path: Path, keys: list[dict[str, Any]]) -> Path:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


def test_jwks_keys_must_pin_a_matching_algorithm(tmp_path: Path, idp_keys: IdpKeys) -> None:
    good = json.loads(idp_keys.jwks_path.read_text())["keys"]
    assert set(load_jwks(idp_keys.jwks_path, "x")) == {"idp-rsa", "idp-ec"}
    bad_cases = [
        {**good[0], "alg": "HS256"},  # an RSA key may not be used for HMAC
        {k: v for k, v in good[0].items() if k != "alg"},  # no pinned algorithm
        {**good[0], "alg": "none"},
        {k: v for k, v in good[1].items() if k != "kid"},
        {**good[0], "use": "enc"},
        {**good[0], "d": "AAAA"},  # a private key does not belong here
        {"kty": "oct", "kid": "short", "alg": "HS256", "k": "c2hvcnQ"},
    ]
    for entry in bad_cases:
        with pytest.raises(KeyConfigError):
            load_jwks(_write(tmp_path, [entry]), "x")
    with pytest.raises(KeyConfigError, match="twice"):
        load_jwks(_write(tmp_path, [good[0], good[0]]), "x")


def test_the_signing_kid_cannot_be_shadowed_by_the_jwks_file(
    tmp_path: Path, idp_keys: IdpKeys
) -> None:
    with pytest.raises(KeyConfigError):
        build_keyring(
            signing_kid="idp-rsa",
            signing_secret=SECRET.encode(),
            issuer="i",
            jwks_file=idp_keys.jwks_path,
        )
