"""The service's log lines: one JSON object per line on stderr, or the old text lines.

Every line goes through structlog's ``ProcessorFormatter`` on the root handler,
so both kinds of logger come out alike: structlog loggers
(``structlog.get_logger()``) and the stdlib ``logging.getLogger(__name__)``
calls the code and its libraries (uvicorn, asyncpg) already make. A JSON line
holds ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event``, then
any fields: ``request_id`` while a request is being handled, fields bound
with ``structlog.contextvars`` or given to a structlog call, and
``exception`` (the traceback, one string) when there is one.

The request id lives in a ContextVar of its own, set by the edge middleware
(the hot path) and read by a processor: setting and resetting it costs 170 ns
a request, where structlog's ``bind_contextvars`` / ``reset_contextvars`` cost
1.05 us (best of 5, on a busy machine, with ``python -m timeit -s "import
contextvars; v = contextvars.ContextVar('r', default=None)"
"v.reset(v.set('abc-123'))"`` and ``-s "import structlog.contextvars as c"
"c.reset_contextvars(**c.bind_contextvars(request_id='abc-123'))"``). Fields
bound with ``structlog.contextvars`` still come out on every line.

No personal data: log calls give transaction ids at most, never a customer,
terminal, card, amount or body; fields with those names are dropped here as
well, should one be passed by mistake.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "text"]

#: The id of the request being handled in this context (api/edge.py sets it).
REQUEST_ID: Final[ContextVar[str | None]] = ContextVar("sankofa_request_id", default=None)

#: Field names that would carry personal or card data: never written.
_PERSONAL: Final = frozenset(
    {
        "customer_id",
        "terminal_id",
        "card",
        "card_number",
        "pan",
        "amount",
        "body",
        "payload",
        "cpf",
        "cnpj",
        "ip_address",
        "device_id",
    }
)

#: uvicorn's coloured copy of its message, given as an ``extra``: noise in a log file.
_NOISE: Final = frozenset({"color_message"})

_DROPPED: Final = _PERSONAL | _NOISE

_FIRST: Final = ("timestamp", "level", "logger", "event", "request_id")


def _add_request_id(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The context's request id, unless the line names its request itself (a batch's
    line, written outside any request, gives ``extra={"request_id": ...}``)."""
    if event_dict.get("request_id") is None:
        rid = REQUEST_ID.get()
        if rid is None:
            event_dict.pop("request_id", None)
        else:
            event_dict["request_id"] = rid
    return event_dict


def _drop_fields(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    for key in _DROPPED.intersection(event_dict):
        del event_dict[key]
    return event_dict


def _ordered(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger, event, request_id first: a line reads left to right."""
    out = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    out.update(event_dict)
    return out


def _text_line(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """The text line the service always wrote (``%(asctime)s %(levelname)s %(name)s:
    %(message)s``, SANKOFA_LOG_FORMAT=text), then any fields as key=value."""
    head = (
        f"{event_dict.pop('timestamp', '')} {str(event_dict.pop('level', '')).upper()}"
        f" {event_dict.pop('logger', '')}: {event_dict.pop('event', '')}"
    )
    exception = event_dict.pop("exception", None)
    fields = "".join(f" {k}={v}" for k, v in event_dict.items())
    return head + fields + (f"\n{exception}" if exception else "")


def _shared() -> list[Processor]:
    """What every line gets, from structlog or from stdlib logging."""
    return [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
    ]


def _stamper(fmt: LogFormat) -> Processor:
    if fmt == "json":
        return structlog.processors.TimeStamper(fmt="iso", utc=True)
    return structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S,%f", utc=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of every line, for a handler of the root logger (or a test's)."""
    render: list[Processor] = (
        [_ordered, structlog.processors.JSONRenderer()] if fmt == "json" else [_text_line]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared(), _stamper(fmt)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_fields,
            structlog.processors.format_exc_info,
            *render,
        ],
    )


def configure_logging(*, level: str, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """One handler on the root logger writing ``fmt`` lines to ``stream`` (stderr),
    replacing any handler there; structlog loggers hand their events to it."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            _stamper(fmt),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries whose debug lines quote the data they carry (aiocache logs every
    # command with its keys, and cache keys hold terminal ids): never below INFO,
    # so that a debug level set for our own code logs no personal data.
    for name in _QUOTING_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level.upper())))


#: Loggers capped at INFO (see ``configure``).
_QUOTING_LIBRARIES = ("aiocache",)


def uvicorn_log_config(fmt: LogFormat) -> dict[str, Any]:
    """``log_config`` keywords for uvicorn: in JSON, none of its own handlers (its
    records reach the root handler above); in text, its usual lines."""
    return {"log_config": None} if fmt == "json" else {}
