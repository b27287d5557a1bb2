"""The ASGI entry point for uvicorn workers: settings read here, at the edge."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from sankofa.api.app import create_app
from sankofa.logs import configure_logging
from sankofa.settings import Settings


def make_app() -> FastAPI:
    """Factory for ``uvicorn --factory sankofa.api.asgi:make_app``.

    A process started this way may have no logging configured: configure it here
    (SANKOFA_LOG_FORMAT, JSON by default) so the service's own messages (drain
    counts, failures) reach the log. ``sankofa serve`` has configured it already.
    """
    settings = Settings()
    if not logging.getLogger().handlers:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
    return create_app(settings, handle_signals=True)
