"""Log lines and request ids, through the real app, PostgreSQL and Redis: every
response carries X-Request-Id, every line written while a request is handled is
one JSON object carrying that id, and no line carries personal data."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from conftest import LiveServer, server_env
from sankofa.api.app import create_app
from sankofa.logs import REQUEST_ID, configure_logging
from sankofa.settings import Settings
from tests_support import tx

SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Captured:
    """What the service's configured JSON handler wrote, one parsed object per line."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def event(self, text: str) -> dict[str, Any]:
        found = [line for line in self.lines() if text in line["event"]]
        assert len(found) == 1, self.text
        return found[0]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """``configure_logging`` as ``sankofa serve`` calls it (JSON, debug), writing to a
    buffer; the root logger and structlog are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # The test's own HTTP client logs each URL it requests: not the service's lines.
    client_log = logging.getLogger("httpx")
    client_level = client_log.level
    client_log.setLevel(logging.WARNING)
    out = Captured()
    configure_logging(level="debug", fmt="json", stream=out.stream)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        client_log.setLevel(client_level)
        structlog.reset_defaults()


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app, with two routes of the test's own that log, in process:
    (client, services)."""
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    async def chatty() -> dict[str, str]:
        logging.getLogger("sankofa.test").warning("stdlib line %s", "here")
        structlog.get_logger("sankofa.test").warning("structlog line", transaction_id="tx-9")
        return {}

    app.add_api_route("/test/boom", boom)
    app.add_api_route("/test/chatty", chatty)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
            yield c, state["services"]


# -- X-Request-Id --------------------------------------------------------------


async def test_a_request_id_is_made_when_none_is_sent(client: httpx.AsyncClient) -> None:
    first = (await client.get("/health/live")).headers["x-request-id"]
    second = (await client.get("/health/live")).headers["x-request-id"]
    assert SANE.fullmatch(first) and SANE.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("given", ["abc-123", "trace:1.2_3", "x" * 128])
async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient, given: str) -> None:
    r = await client.get("/health/live", headers={"x-request-id": given})
    assert r.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [b"x" * 129, b"x" * 300, b"abc\ndef", b"abc\r\nx-evil: 1", b"a b", "é".encode(), b"a/b", b""],
)
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, given: bytes) -> None:
    r = await client.get("/health/live", headers={"x-request-id": given})
    made = r.headers["x-request-id"]
    assert made.encode() != given and SANE.fullmatch(made), made
    assert "x-evil" not in r.headers


@pytest.mark.door_shedding
async def test_problem_answers_carry_the_request_id(
    client: httpx.AsyncClient, services: Any
) -> None:
    rid = {"x-request-id": "req-problem-1"}
    not_found = await client.get("/v1/transactions/nope", headers=rid)
    invalid = await client.post("/v1/transactions", json=tx(amount="-1"), headers=rid)
    too_big = await client.get("/health/live", headers={**rid, "x-big": "x" * 17_000})
    assert [not_found.status_code, invalid.status_code, too_big.status_code] == [404, 422, 431]
    for r in (not_found, invalid, too_big):
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-request-id"] == "req-problem-1"
    # Door shedding: a sustained lag refuses low traffic before any parsing. The
    # shedder's sampler is stopped so that no sample clears the state before the request.
    await services.shedder.stop()
    loop = asyncio.get_running_loop()
    services.shedder.observe(10.0, loop.time() - 60.0)
    shed = await client.post("/v1/transactions", json=tx(), headers={**rid, "x-priority": "low"})
    assert shed.status_code == 503 and "retry-after" in shed.headers, shed.text
    assert shed.headers["x-request-id"] == "req-problem-1"


# -- JSON lines carrying the request id -----------------------------------------


async def test_an_unhandled_error_is_logged_as_json_with_the_request_id(
    captured: Captured, app_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, _ = app_client
    r = await client.get("/test/boom", headers={"x-request-id": "req-boom-7"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "req-boom-7"
    line = captured.event("unhandled error on GET /test/boom")
    assert line["request_id"] == "req-boom-7"
    assert line["level"] == "error"
    assert line["logger"] == "sankofa.api.edge"
    assert "RuntimeError: a bug" in line["exception"]
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0), line["timestamp"]
    # One object per line: the traceback's newlines are inside the JSON string.
    assert all(text.startswith("{") for text in captured.text.splitlines())


async def test_stdlib_and_structlog_lines_carry_the_generated_request_id(
    captured: Captured, app_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, _ = app_client
    r = await client.get("/test/chatty")
    assert r.status_code == 200
    made = r.headers["x-request-id"]
    stdlib = captured.event("stdlib line here")
    structured = captured.event("structlog line")
    assert stdlib["request_id"] == structured["request_id"] == made
    assert stdlib["level"] == structured["level"] == "warning"
    assert structured["transaction_id"] == "tx-9"
    # Outside a request, no id: the edge resets what it set.
    logging.getLogger("sankofa.test").warning("after the request")
    assert "request_id" not in captured.event("after the request")


# -- no personal data -------------------------------------------------------------

CUSTOMER = "cust-PII-44719"
TERMINAL = "term-PII-99207"
AMOUNT = "4471.93"
NOTE = "note-PII-31337"


async def test_no_log_line_carries_a_customer_id_or_other_personal_data(
    captured: Captured, app_client: tuple[httpx.AsyncClient, Any]
) -> None:
    """At debug level, through scoring, replay, conflict, refusal and failure paths."""
    client, services = app_client
    personal = {"customer_id": CUSTOMER, "terminal_id": TERMINAL, "amount": AMOUNT}
    body = tx(41, **personal, metadata={"note": NOTE})
    assert (await client.post("/v1/transactions", json=body)).status_code == 200
    assert (await client.post("/v1/transactions", json=body)).status_code == 200  # replay
    conflict = {**body, "amount": "1.00"}
    assert (await client.post("/v1/transactions", json=conflict)).status_code == 409
    invalid = tx(42, **{**personal, "timestamp": "soon"})
    assert (await client.post("/v1/transactions", json=invalid)).status_code == 422
    batch = {"transactions": [tx(43, **personal), tx(44, **personal)]}
    assert (await client.post("/v1/transactions/batch", json=batch)).status_code == 200
    assert (await client.get("/test/boom", params={"customer_id": CUSTOMER})).status_code == 500

    # A value the database refuses, past the parser (as in test_break_it): logged.
    from sankofa.engine.scorer import ScoreRequest
    from sankofa.queues.priority import Priority

    poisoned = services.parser.parse(tx(45, **personal))
    poisoned.metadata = {"note": f"{NOTE}\u0000"}
    inside = REQUEST_ID.set("req-poisoned")  # as the edge sets it for a request
    try:
        with pytest.raises(Exception, match="could not be stored"):
            await services.dispatcher.submit(ScoreRequest([poisoned]), priority=Priority.NORMAL)
    finally:
        REQUEST_ID.reset(inside)
    unstorable = captured.event("unstorable value")
    assert unstorable["event"].endswith("the first tx-45")
    # Written by the batch's task, outside the request, yet naming it.
    assert unstorable["request_id"] == "req-poisoned"

    lines = captured.lines()  # every line is JSON
    assert len(lines) >= 2, captured.text
    for secret in (CUSTOMER, TERMINAL, AMOUNT, NOTE):
        assert secret not in captured.text, secret


def test_structured_fields_naming_personal_data_are_dropped(captured: Captured) -> None:
    log = structlog.get_logger("sankofa.test")
    log.warning("scored", transaction_id="tx-1", customer_id=CUSTOMER, amount=AMOUNT)
    logging.getLogger("sankofa.test").warning("stdlib", extra={"terminal_id": TERMINAL})
    assert captured.event("scored")["transaction_id"] == "tx-1"
    captured.event("stdlib")
    assert CUSTOMER not in captured.text and AMOUNT not in captured.text
    assert TERMINAL not in captured.text


def test_the_text_format_stays_available() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="info", fmt="text", stream=stream)
    try:
        logging.getLogger("sankofa.test").info("drained %d", 3)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO sankofa.test: drained 3\n", stream.getvalue()
    ), stream.getvalue()


# -- sankofa serve ----------------------------------------------------------------


def test_sankofa_serve_writes_json_lines_uvicorns_included(
    settings: Settings, tmp_path: Path
) -> None:
    """The real command, over HTTP: every line it writes on stderr is one JSON object,
    its own and uvicorn's, and a request's id comes back in the header."""
    # No SANKOFA_LOG_FORMAT: JSON is the default.
    env = server_env(settings, SANKOFA_LOG_LEVEL="info")
    server = LiveServer(env, tmp_path / "info.log")
    server.start()
    try:
        given = httpx.get(f"{server.url}/health/live", headers={"x-request-id": "live-1"})
        made = httpx.get(f"{server.url}/v1/transactions/nope")
    finally:
        code = server.stop()
    assert code == 0
    assert given.headers["x-request-id"] == "live-1"
    assert made.status_code == 404 and SANE.fullmatch(made.headers["x-request-id"])
    text = (tmp_path / "info.log").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert {"timestamp", "level", "logger", "event"} <= set(line), line
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers, text  # uvicorn's own lines are JSON too
    assert any(line["event"].startswith("dispatcher drained") for line in lines), text
