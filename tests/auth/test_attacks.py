"""Forged, stale and misdirected tokens: each is a 401, each its own test.

Every test sends one token to an endpoint the token's role would open
(GET /v1/transactions/{id} for analyst), so a 401 can only come from the token.
The first test shows the same request with an honest token gets through
(404: no such transaction, past authentication).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
from jose import jwt

from auth.conftest import (
    AUDIENCE,
    IDP_ISSUER,
    ISSUER,
    KID,
    SECRET,
    AuthApp,
    IdpKeys,
    bearer,
    claims,
    sign,
)

PATH = "/v1/transactions/no-such-tx"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def _get(app: AuthApp, token: str) -> httpx.Response:
    return await app.client.get(PATH, headers=bearer(token))


def _assert_401(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Bearer ")
    assert resp.json()["type"] == "urn:sankofa:problem:unauthorized"


async def test_an_honest_token_gets_past_authentication(auth_app: AuthApp) -> None:
    resp = await _get(auth_app, sign(claims(roles=["analyst"])))
    assert resp.status_code == 404, resp.text


async def test_honest_identity_provider_tokens_rs256_and_es256_get_through(
    auth_app: AuthApp, idp_keys: IdpKeys
) -> None:
    for key, alg, kid in (
        (idp_keys.rsa_private_pem, "RS256", "idp-rsa"),
        (idp_keys.ec_private_pem, "ES256", "idp-ec"),
    ):
        token = sign(claims(iss=IDP_ISSUER, roles=["analyst"]), key=key, alg=alg, kid=kid)
        assert (await _get(auth_app, token)).status_code == 404


async def test_alg_none_is_refused(auth_app: AuthApp) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": KID, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims(roles=["analyst"])).encode())
    _assert_401(await _get(auth_app, f"{header}.{payload}."))


async def test_alg_none_without_kid_is_refused(auth_app: AuthApp) -> None:
    header = _b64(json.dumps({"alg": "none"}).encode())
    payload = _b64(json.dumps(claims(roles=["analyst"])).encode())
    _assert_401(await _get(auth_app, f"{header}.{payload}."))


def _hs256_with(secret: bytes, kid: str, payload: dict[str, Any]) -> str:
    """HS256 signed by hand: jose itself refuses a PEM as an HMAC secret, an
    attacker's tool would not."""
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    auth_app: AuthApp, idp_keys: IdpKeys
) -> None:
    token = _hs256_with(
        idp_keys.rsa_public_pem, "idp-rsa", claims(iss=IDP_ISSUER, roles=["analyst"])
    )
    _assert_401(await _get(auth_app, token))


async def test_hs256_signed_with_the_ec_public_key_is_refused(
    auth_app: AuthApp, idp_keys: IdpKeys
) -> None:
    token = _hs256_with(idp_keys.ec_public_pem, "idp-ec", claims(iss=IDP_ISSUER, roles=["analyst"]))
    _assert_401(await _get(auth_app, token))


async def test_expired_token_is_refused(auth_app: AuthApp) -> None:
    now = int(time.time())
    token = sign(claims(roles=["analyst"], iat=now - 600, exp=now - 120))
    _assert_401(await _get(auth_app, token))


async def test_token_without_exp_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], exp=None))))


async def test_token_without_iat_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], iat=None))))


async def test_wrong_audience_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], aud="another-api"))))


async def test_missing_audience_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], aud=None))))


async def test_wrong_issuer_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], iss="someone-else"))))


async def test_identity_provider_key_cannot_sign_as_this_service(
    auth_app: AuthApp, idp_keys: IdpKeys
) -> None:
    # Each key signs for its own issuer only.
    token = sign(
        claims(roles=["analyst"]), key=idp_keys.rsa_private_pem, alg="RS256", kid="idp-rsa"
    )
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["iss"] == ISSUER
    _assert_401(await _get(auth_app, token))


async def test_tampered_payload_is_refused(auth_app: AuthApp) -> None:
    token = sign(claims(roles=["scorer"]))
    head, _, sig = token.split(".")
    forged = _b64(json.dumps(claims(roles=["scorer", "analyst", "admin"])).encode())
    _assert_401(await _get(auth_app, f"{head}.{forged}.{sig}"))


async def test_tampered_signature_is_refused(auth_app: AuthApp) -> None:
    token = sign(claims(roles=["analyst"]))
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    _assert_401(await _get(auth_app, flipped))


async def test_unknown_kid_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"]), kid="no-such-key")))


async def test_token_without_kid_is_refused(auth_app: AuthApp) -> None:
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"]), kid=None)))


async def test_right_kid_wrong_algorithm_is_refused(auth_app: AuthApp) -> None:
    # HS512 with the real secret: the key is pinned to HS256.
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"]), alg="HS512")))


async def test_lifetime_over_the_cap_is_refused(auth_app: AuthApp) -> None:
    now = int(time.time())
    token = sign(claims(roles=["analyst"], iat=now, exp=now + 10 * 86_400))
    _assert_401(await _get(auth_app, token))


async def test_issued_in_the_future_is_refused(auth_app: AuthApp) -> None:
    now = int(time.time())
    token = sign(claims(roles=["analyst"], iat=now + 3600, exp=now + 3700))
    _assert_401(await _get(auth_app, token))


async def test_jwe_five_part_token_is_refused(auth_app: AuthApp) -> None:
    jwe = ".".join(_b64(p) for p in (b'{"alg":"dir","enc":"A256GCM"}', b"", b"iv", b"ct", b"tag"))
    resp = await _get(auth_app, jwe)
    _assert_401(resp)
    assert "JWE" in resp.json()["detail"]


async def test_token_signed_with_another_secret_is_refused(auth_app: AuthApp) -> None:
    other = SECRET[::-1]
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"]), key=other)))


async def test_token_of_a_deleted_client_is_refused(auth_app: AuthApp, register: Any) -> None:
    client, secret = await register("analyst")
    got = await auth_app.client.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret),
    )
    token = got.json()["access_token"]
    assert (await _get(auth_app, token)).status_code == 404  # works while registered
    admin = sign(claims(roles=["admin"]))
    deleted = await auth_app.client.delete(f"/v1/clients/{client.client_id}", headers=bearer(admin))
    assert deleted.status_code == 204
    _assert_401(await _get(auth_app, token))


async def test_token_of_a_client_deleted_elsewhere_is_refused_after_a_refresh(
    auth_app: AuthApp, register: Any, db: Any
) -> None:
    # Deleted by another process (sankofa client delete): this one learns it at
    # its next refresh of the clients (every SANKOFA_AUTH_CLIENTS_REFRESH_S).
    client, _ = await register("analyst")
    await auth_app.services.auth.clients.refresh()
    token, _ = auth_app.services.auth.issuer.issue(
        subject=client.client_id, roles=["analyst"], client_id=client.client_id
    )
    assert (await _get(auth_app, token)).status_code == 404
    await db.execute("DELETE FROM auth_clients WHERE client_id = $1", client.client_id)
    await auth_app.services.auth.clients.refresh()
    _assert_401(await _get(auth_app, token))


async def test_oversized_authorization_header_is_refused_before_parsing(
    auth_app: AuthApp,
) -> None:
    # Not a token at all: refused on its size alone.
    resp = await auth_app.client.get(PATH, headers={"authorization": "Bearer " + "a" * 5000})
    assert resp.status_code == 431
    assert resp.headers["content-type"] == "application/problem+json"


async def test_no_token_is_401_with_a_bearer_challenge(auth_app: AuthApp) -> None:
    resp = await auth_app.client.get(PATH)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="sankofa"'


async def test_other_schemes_and_garbage_are_refused(auth_app: AuthApp) -> None:
    values: tuple[str | bytes, ...] = (
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer \xfc".encode("latin-1"),
    )
    for value in values:
        resp = await auth_app.client.get(PATH, headers={"authorization": value})
        assert resp.status_code == 401, (value, resp.text)


def test_jose_refuses_a_public_key_as_hmac_secret_too(idp_keys: IdpKeys) -> None:
    # A second line of defence below the pinned algorithm: the library itself.
    import pytest
    from jose.exceptions import JOSEError

    with pytest.raises(JOSEError):
        jwt.encode(claims(), idp_keys.rsa_public_pem.decode(), algorithm="HS256")
    assert AUDIENCE  # the constants above are the service's own


async def test_a_withdrawn_role_stops_working_before_the_token_expires(
    auth_app: AuthApp, register: Any, db: Any
) -> None:
    # A token says what the client held when it was issued; what it holds now wins.
    client, secret = await register("analyst", "scorer")
    got = await auth_app.client.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret),
    )
    token = got.json()["access_token"]
    assert (await _get(auth_app, token)).status_code == 404
    await db.execute(
        "UPDATE auth_clients SET roles = '{scorer}' WHERE client_id = $1", client.client_id
    )
    await auth_app.services.auth.clients.refresh()
    assert (await _get(auth_app, token)).status_code == 403


async def test_token_not_valid_yet_is_refused(auth_app: AuthApp) -> None:
    now = int(time.time())
    _assert_401(await _get(auth_app, sign(claims(roles=["analyst"], nbf=now + 600))))
