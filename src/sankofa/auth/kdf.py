"""Client secrets are stored as scrypt hashes (hashlib, RFC 7914), never in clear.

scrypt is slow and memory-hard on purpose (n=2**14, r=8, p=1: 16 MiB and some
tens of milliseconds per check), so a stolen table cannot be brute-forced
cheaply. Callers run checks in a thread (``asyncio.to_thread``) to keep the
event loop free, and throttle token requests per client id.

Stored form: ``scrypt$n$r$p$<salt b64>$<hash b64>``, so parameters can be
raised later without breaking the secrets already stored.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from typing import Final

_N: Final = 2**14
_R: Final = 8
_P: Final = 1
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
#: OpenSSL's default limit (32 MiB) is too close to 128 * n * r; give room.
_MAXMEM: Final = 64 * 1024 * 1024


def new_secret() -> str:
    """A fresh client secret: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_HASH_BYTES
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` hashes to ``stored``; False for a wrong secret or a
    stored value that is not ours. Compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(
            secret.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against when the client id is unknown, so that an unknown id and a
    wrong secret take the same time (no oracle for which ids exist)."""
    return hash_secret("sankofa-no-such-client")
