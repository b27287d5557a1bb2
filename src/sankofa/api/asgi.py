"""The ASGI entry point for uvicorn workers: settings read here, at the edge."""

from __future__ import annotations

from fastapi import FastAPI

from sankofa.api.app import create_app
from sankofa.settings import Settings


def make_app() -> FastAPI:
    """Factory for ``uvicorn --factory sankofa.api.asgi:make_app``."""
    return create_app(Settings(), handle_signals=True)
