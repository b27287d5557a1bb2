"""The one middleware every HTTP request crosses: request id, header limit, last-resort
500, metrics. One layer rather than three, because each ASGI layer wraps ``send`` in
another closure and costs every request a few microseconds.

* X-Request-Id: echoed when well formed (no CR/LF or control characters can reach
  a response header), otherwise generated.
* Header sections over ``MAX_HEADER_BYTES`` get 431.
* An unhandled exception becomes a 500 problem here, inside Starlette's own error
  middleware, which would answer too but then re-raise, and the server would
  close the connection under the client's next request.
* Every answer is counted and timed by route, status and priority class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sankofa.api.headers import MAX_HEADER_BYTES, request_id
from sankofa.api.problems import from_error, problem
from sankofa.errors import HeadersTooLargeError
from sankofa.metrics import PRIORITY_SCOPE_KEY, Metrics, route_of

log = logging.getLogger(__name__)


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, metrics_of: Callable[[Scope], Metrics | None]) -> None:
        self.app = app
        self._metrics_of = metrics_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"x-request-id":
                given = value
        rid = request_id(given)
        status = 500
        response_started = False

        async def edge_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            if size > MAX_HEADER_BYTES:
                error = HeadersTooLargeError(
                    f"request headers of {size} bytes exceed {MAX_HEADER_BYTES}"
                )
                await from_error(error, scope.get("path"))(scope, receive, edge_send)
                return
            try:
                await self.app(scope, receive, edge_send)
            except Exception:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                if response_started:
                    raise  # nothing sensible can be sent any more
                response = problem(
                    500,
                    "internal",
                    "Internal error",
                    "the server failed to handle this request; it has been logged",
                    instance=scope.get("path"),
                )
                await response(scope, receive, edge_send)
        finally:
            metrics = self._metrics_of(scope)
            if metrics is not None:
                metrics.observe_request(
                    route_of(scope["method"], scope["path"]),
                    status,
                    scope.get(PRIORITY_SCOPE_KEY, "none"),
                    time.perf_counter() - started,
                )
