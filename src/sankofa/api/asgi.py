"""The ASGI entry point for uvicorn workers: settings read here, at the edge."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from sankofa.api.app import create_app
from sankofa.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_app() -> FastAPI:
    """Factory for ``uvicorn --factory sankofa.api.asgi:make_app``.

    Worker processes start fresh (no logging configured): configure it here so
    the service's own messages (drain counts, failures) reach the log.
    """
    settings = Settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    return create_app(settings, handle_signals=True)
