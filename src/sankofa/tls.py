"""TLS served by the service itself: TLS 1.3 only.

In the shipped topology nginx terminates TLS (deploy/nginx/nginx.conf,
``ssl_protocols TLSv1.3``) and talks plain HTTP to the instances on a private
network. Where there is no proxy in front, or the hop behind it must be
encrypted too, ``SANKOFA_TLS_CERTFILE`` and ``SANKOFA_TLS_KEYFILE`` make
``sankofa serve`` (every worker, the critical lane included) speak HTTPS.

uvicorn builds its context from the files with the protocol's defaults, which
still allow TLS 1.2; ``TLSConfig`` raises the floor to TLS 1.3 on that context
once it is built, so a TLS 1.2 client fails in the handshake. TLS 1.3's cipher
suites are all AEAD with forward secrecy, so no cipher list is configured.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Final

import uvicorn

#: The oldest protocol the service accepts.
MINIMUM_TLS_VERSION: Final = ssl.TLSVersion.TLSv1_3


def restrict(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` refusing anything older than TLS 1.3, and compression."""
    context.minimum_version = MINIMUM_TLS_VERSION
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def uvicorn_tls_options(certfile: Path | None, keyfile: Path | None) -> dict[str, Any]:
    """The keyword arguments that make a ``TLSConfig`` serve HTTPS (none: plain HTTP)."""
    if certfile is None or keyfile is None:
        return {}
    return {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}


class TLSConfig(uvicorn.Config):
    """uvicorn's ``Config``, with its TLS context restricted to TLS 1.3 and up."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            restrict(self.ssl)


def serve(app: str, **options: Any) -> int:
    """``uvicorn.run`` for one process, through ``TLSConfig``: the process's exit
    code (3 when the server could not start, as uvicorn's own)."""
    server = uvicorn.Server(TLSConfig(app, **options))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 3
