"""Graceful shutdown on SIGTERM / SIGINT: drain first, then let the server stop.

An HTTP server that stops on SIGTERM closes its idle connections at once, and
requests already sent on them are lost without an answer. Instead, the first
signal starts the drain while the server keeps running:

1. readiness turns false and new scoring requests get 503 with Retry-After
   and ``Connection: close`` (clients reconnect elsewhere);
2. queued work is served until the grace deadline; what is left gets 503;
3. a short linger answers requests that were in flight on the network;
4. the signal is handed to the server's own handler (uvicorn's), which stops
   listening, finishes open requests and runs the lifespan shutdown.

A second signal skips the wait and goes straight to step 4.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from sankofa.queues.dispatcher import Dispatcher

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulShutdown:
    """Owns the process's SIGTERM / SIGINT handlers between install() and uninstall()."""

    def __init__(
        self, *, dispatcher: Dispatcher[Any, Any], grace_s: float, linger_s: float
    ) -> None:
        if grace_s < 0 or linger_s < 0:
            raise ValueError("grace_s and linger_s must be >= 0")
        self._dispatcher = dispatcher
        self._grace_s = grace_s
        self._linger_s = linger_s
        self._previous: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self) -> None:
        if self._loop is None:
            return
        for sig, previous in self._previous.items():
            self._loop.remove_signal_handler(sig)
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, sig: int) -> None:
        if self._task is None:
            log.info("%s received: draining before shutdown", signal.Signals(sig).name)
            self._task = asyncio.create_task(self._drain_then_forward(sig))
        else:
            log.warning("second %s: shutting down now", signal.Signals(sig).name)
            self._forward(sig)

    async def _drain_then_forward(self, sig: int) -> None:
        try:
            left = await self._dispatcher.drain(self._grace_s)
            log.info("drained; %d queued requests answered 503 at the grace deadline", left)
            await asyncio.sleep(self._linger_s)
        finally:
            self._forward(sig)

    def _forward(self, sig: int) -> None:
        previous = self._previous.get(sig, signal.SIG_DFL)
        self.uninstall()
        if callable(previous):
            handler: Callable[[int, Any], Any] = previous
            handler(sig, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(sig)
