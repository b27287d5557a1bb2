"""Secrets from settings: no default or short signing secret where tokens count,
and no way to turn authentication off in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sankofa.settings import DEV_JWT_SECRET, Settings

GOOD = "0123456789abcdef0123456789abcdef"
HMAC = "prod-hmac-key-0123456789"
#: Production also needs a card token key of its own (docs/security.md, PCI DSS).
CARD = "prod-card-token-key-0123456789"


def test_production_requires_auth_by_default() -> None:
    s = Settings(environment="production", hmac_key=HMAC, card_token_key=CARD, jwt_secret=GOOD)
    assert s.auth_enabled


def test_development_and_test_leave_auth_off_by_default() -> None:
    assert not Settings(environment="development").auth_enabled
    assert not Settings(environment="test").auth_enabled
    assert Settings(environment="test", auth_required=True, jwt_secret=GOOD).auth_enabled


def test_production_refuses_auth_off() -> None:
    with pytest.raises(ValidationError, match="AUTH_REQUIRED"):
        Settings(
            environment="production",
            hmac_key=HMAC,
            card_token_key=CARD,
            jwt_secret=GOOD,
            auth_required=False,
        )


@pytest.mark.parametrize("environment", ["production", "test", "development"])
def test_the_default_secret_is_refused_where_auth_is_on(environment: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(environment=environment, hmac_key=HMAC, card_token_key=CARD, auth_required=True)
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(
            environment=environment,
            hmac_key=HMAC,
            card_token_key=CARD,
            auth_required=True,
            jwt_secret=DEV_JWT_SECRET,
        )


def test_production_refuses_the_default_secret_even_unasked() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(environment="production", hmac_key=HMAC, card_token_key=CARD)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(
            environment="production",
            hmac_key=HMAC,
            card_token_key=CARD,
            jwt_secret="short-secret-of-31-bytes-123456",
        )


def test_lifetime_above_its_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="JWT_TTL_S"):
        Settings(jwt_ttl_s=7200, jwt_max_ttl_s=3600)


def test_serve_refuses_to_start_with_the_default_secret_in_production(tmp_path: object) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(SANKOFA_ENVIRONMENT="production", SANKOFA_HMAC_KEY=HMAC, SANKOFA_CARD_TOKEN_KEY=CARD)
    proc = subprocess.run(
        [sys.executable, "-m", "sankofa.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "SANKOFA_JWT_SECRET" in proc.stderr
