"""The one middleware every HTTP request crosses: request id, header limit, last-resort
500, metrics. One layer rather than three, because each ASGI layer wraps ``send`` in
another closure and costs every request a few microseconds.

* X-Request-Id: echoed when well formed and sent once (no CR/LF or control characters can reach
  a response header or a log line), otherwise generated; sent back on every
  response, this layer's own 431, 503 and 500 included, and set as the context's
  request id (sankofa.logs.REQUEST_ID) so that every log line written while the
  request is handled carries it. No line is logged per request (no access log).
* Header sections over ``MAX_HEADER_BYTES`` get 431.
* Scoring requests of a class the load shedder refuses (the event loop is
  saturated, queues/shedding.py) get 503 with Retry-After here, before any
  parsing.
* An unhandled exception becomes a 500 problem here, inside Starlette's own error
  middleware, which would answer too but then re-raise, and the server would
  close the connection under the client's next request.
* Every answer is counted and timed by route, status and priority class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sankofa.api.headers import MAX_HEADER_BYTES, request_id
from sankofa.api.problems import from_error, problem
from sankofa.api.services import Services
from sankofa.errors import HeadersTooLargeError, OverloadedError
from sankofa.logs import REQUEST_ID
from sankofa.metrics import PRIORITY_SCOPE_KEY, route_of
from sankofa.privacy.cards import mask_pans
from sankofa.queues.priority import Priority, PriorityHeaderError, resolve_priority

log = logging.getLogger(__name__)


def _priority(x_priority: bytes | None, rfc: bytes | None) -> Priority | None:
    """The request's class from its headers, or None if they are invalid (the
    route answers those with 422)."""
    try:
        return resolve_priority(
            None if x_priority is None else x_priority.decode("latin-1"),
            None if rfc is None else rfc.decode("latin-1"),
        )
    except PriorityHeaderError:
        return None


#: Routes whose requests may be shed at the door. Not the batch route: a batch
#: of a thousand keeps the loop busy for tens of milliseconds by design, which
#: would read as saturation; batches are bounded by the dispatcher's queues.
_SHEDDABLE: Final = frozenset({"/v1/transactions"})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, services_of: Callable[[Scope], Services | None]) -> None:
        self.app = app
        self._services_of = services_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = x_priority = rfc_priority = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            # A repeated single-valued header (scan_headers refuses it on the
            # routes that read it): no id is echoed, no class is shed on.
            if name == b"x-request-id":
                given = value if given is None else b""
            elif name == b"x-priority":
                x_priority = value if x_priority is None else b""
            elif name == b"priority":
                rfc_priority = value if rfc_priority is None else rfc_priority + b", " + value
        rid = request_id(given)
        services = self._services_of(scope)
        status = 500
        response_started = False

        async def edge_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        counted = False
        # Reset below: a server that runs requests in the caller's context (an
        # in-process client) must not see one request's id on later lines.
        bound = REQUEST_ID.set(rid.decode("ascii"))
        try:
            if size > MAX_HEADER_BYTES:
                error = HeadersTooLargeError(
                    f"request headers of {size} bytes exceed {MAX_HEADER_BYTES}"
                )
                await from_error(error, scope.get("path"))(scope, receive, edge_send)
                return
            counted = False
            if services is not None and scope["path"] in _SHEDDABLE and scope["method"] == "POST":
                priority = _priority(x_priority, rfc_priority)
                if priority is not None and (signal := services.shedder.refuses(priority)):
                    scope[PRIORITY_SCOPE_KEY] = priority.label
                    services.metrics.shed_one(priority.label)
                    services.metrics.door_shed_one(priority.label, signal)
                    shed = OverloadedError(
                        f"the service is saturated; {priority.label} traffic is refused for now",
                        retry_after_s=1.0,
                    )
                    await from_error(shed, scope.get("path"))(scope, receive, edge_send)
                    return
                services.shedder.in_progress += 1
                counted = True
            try:
                await self.app(scope, receive, edge_send)
            except Exception:
                log.exception(
                    "unhandled error on %s %s",
                    scope.get("method"),
                    mask_pans(str(scope.get("path"))),
                )
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
            if services is not None:
                if counted:
                    services.shedder.in_progress -= 1
                services.metrics.observe_request(
                    route_of(scope["method"], scope["path"]),
                    status,
                    scope.get(PRIORITY_SCOPE_KEY, "none"),
                    time.perf_counter() - started,
                )
            REQUEST_ID.reset(bound)
