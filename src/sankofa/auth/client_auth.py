"""How Sankofa's own clients (``sankofa replay``, ``sankofa loadtest``) authenticate.

Credentials come from flags, else from ``SANKOFA_CLIENT_TOKEN`` or
``SANKOFA_CLIENT_ID`` + ``SANKOFA_CLIENT_SECRET``:

* ``--token T``: sent as is (``sankofa token --role scorer`` prints one);
* ``--client-id I --client-secret S``: a token is obtained from the service's
  ``/v1/oauth/token`` (client credentials, HTTP Basic) and, for the replay,
  obtained again a minute before it expires;
* neither: no Authorization header (a service in development mode).

These are client-side settings, kept apart from the service's ``Settings`` so
that a client machine needs none of the service's secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A token is renewed this long before its expiry.
RENEW_BEFORE_S: Final = 60.0
TOKEN_PATH: Final = "/v1/oauth/token"


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANKOFA_", extra="ignore", frozen=True)

    client_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @property
    def empty(self) -> bool:
        return self.token is None and self.client_id is None


def add_client_auth_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "authentication",
        "a bearer token, or a client id and secret to get one (default SANKOFA_CLIENT_TOKEN,"
        " SANKOFA_CLIENT_ID, SANKOFA_CLIENT_SECRET); none: no Authorization header",
    )
    g.add_argument("--token", help="bearer token (e.g. from sankofa token --role scorer)")
    g.add_argument("--client-id", help="OAuth client id (sankofa client create)")
    g.add_argument("--client-secret", help="OAuth client secret")


def credentials_from(args: argparse.Namespace) -> Credentials:
    """Flags first, then SANKOFA_CLIENT_* variables. ValueError when incomplete."""
    token = getattr(args, "token", None)
    cid = getattr(args, "client_id", None)
    secret = getattr(args, "client_secret", None)
    if token is None and cid is None and secret is None:
        env = ClientSettings()
        token = env.client_token.get_secret_value() if env.client_token else None
        cid = env.client_id
        secret = env.client_secret.get_secret_value() if env.client_secret else None
    if token is not None and (cid is not None or secret is not None):
        raise ValueError("give a token or a client id and secret, not both")
    if (cid is None) != (secret is None):
        raise ValueError("a client id needs its client secret, and the other way round")
    return Credentials(token=token, client_id=cid, client_secret=secret)


def _token_answer(resp: httpx.Response) -> tuple[str, float]:
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise PermissionError(f"token request refused ({resp.status_code}): {detail}")
    body: dict[str, Any] = resp.json()
    return str(body["access_token"]), float(body.get("expires_in", 0))


def fetch_token(
    url: str, client_id: str, client_secret: str, *, timeout_s: float = 10.0
) -> tuple[str, float]:
    """A token from the service (blocking): (token, expires_in seconds)."""
    resp = httpx.post(
        url.rstrip("/") + TOKEN_PATH,
        data={"grant_type": "client_credentials"},
        auth=(client_id, client_secret),
        timeout=timeout_s,
    )
    return _token_answer(resp)


def authorization_header(url: str, creds: Credentials) -> tuple[str | None, float | None]:
    """The Authorization header value for a run, and its token's lifetime when known."""
    if creds.token is not None:
        return f"Bearer {creds.token}", None
    if creds.client_id is not None and creds.client_secret is not None:
        token, ttl = fetch_token(url, creds.client_id, creds.client_secret)
        return f"Bearer {token}", ttl
    return None, None


class BearerAuth(httpx.Auth):
    """httpx auth for long runs: a token from the service, renewed before it expires."""

    def __init__(self, url: str, creds: Credentials) -> None:
        self._url = url.rstrip("/")
        self._creds = creds
        self._token: str | None = creds.token
        self._renew_at = float("inf") if creds.token is not None else 0.0
        self._lock = asyncio.Lock()

    async def _current(self) -> str:
        if time.monotonic() < self._renew_at and self._token is not None:
            return self._token
        async with self._lock:
            if time.monotonic() >= self._renew_at or self._token is None:
                assert self._creds.client_id is not None and self._creds.client_secret is not None
                async with httpx.AsyncClient(timeout=10.0) as c:
                    resp = await c.post(
                        self._url + TOKEN_PATH,
                        data={"grant_type": "client_credentials"},
                        auth=(self._creds.client_id, self._creds.client_secret),
                    )
                token, ttl = _token_answer(resp)
                self._token = token
                self._renew_at = time.monotonic() + max(1.0, ttl - RENEW_BEFORE_S)
            return self._token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._current()}"
        yield request
