"""OpenAPI shapes of the API, for ``/docs``.

The hot path validates with ``engine.transaction`` (hand-written, one pass, a
message per broken rule); these models only describe the contract to readers
and client generators. A test checks both agree on the field names.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

from sankofa.engine import constants as C

_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$"
)
#: No leading or trailing whitespace (the rest: printable characters, checked by
#: the service).
_TRIMMED = r"^\S(.*\S)?$"
_AmountText = Annotated[str, Field(pattern=r"^[0-9]{1,16}(\.[0-9]{1,2})?$")]
_AmountNumber = Annotated[float, Field(gt=0, le=10**12)]


class TransactionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: str = Field(
        pattern=r"^[A-Za-z0-9._:-]{1,64}$", description="The idempotency key.", examples=["tx-0001"]
    )
    timestamp: str = Field(
        pattern=_RFC3339,
        description="RFC 3339 with an offset between -14:00 and +14:00; naive times are"
        " refused, and so are times more than an hour ahead of the server's clock. Event time.",
        examples=["2018-04-01T10:00:00-03:00"],
    )
    amount: _AmountText | _AmountNumber = Field(
        description="Decimal string (plain notation) or JSON number; > 0, at most 2 decimals,"
        " at most 10^12.",
        examples=["48.70"],
    )
    currency: str = Field(
        default="BRL", pattern=r"^[A-Z]{3}$", description="ISO 4217 code, in capitals."
    )
    customer_id: str = Field(
        pattern=_TRIMMED,
        min_length=1,
        max_length=C.MAX_IDENTIFIER_CHARS,
        description="The payer; printable characters; stored pseudonymised (keyed HMAC)."
        " A card number (PAN) here is refused.",
    )
    customer_id_type: Literal["cpf", "cnpj"] | None = Field(
        default=None,
        description="Declares customer_id a CPF or CNPJ: check digits verified (422"
        " otherwise), punctuation removed before it is pseudonymised.",
    )
    card_number: str | None = Field(
        default=None,
        pattern=r"^[0-9](?:[ -]?[0-9]){12,18}$",
        description="The card's PAN (13-19 digits passing Luhn; single spaces or dashes"
        " between groups allowed). Never stored: only a keyed HMAC token and the last four"
        " digits. A PAN in any other field is refused (422).",
        examples=["4111 1111 1111 1111"],
    )
    terminal_id: str = Field(
        pattern=_TRIMMED,
        min_length=1,
        max_length=C.MAX_IDENTIFIER_CHARS,
        description="Terminal, merchant or receiver (PIX key, account); printable characters.",
    )
    type: Literal["card", "pix", "ted", "boleto"] = "card"
    channel: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,32}$")
    device_id: str | None = Field(
        default=None, pattern=_TRIMMED, min_length=1, max_length=C.MAX_IDENTIFIER_CHARS
    )
    ip_address: IPvAnyAddress | None = Field(
        default=None, description="IPv4 or IPv6, without an IPv6 zone (fe80::1%eth0 is a 422)."
    )
    metadata: dict[str, str | int | float | bool | None] | None = Field(
        default=None,
        max_length=C.MAX_METADATA_KEYS,
        description="Small flat object (at most 32 keys, 2 KB).",
    )


class TransactionBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: list[TransactionIn] = Field(min_length=1, max_length=1000)


class DecisionOut(BaseModel):
    transaction_id: str
    decision: Literal["approve", "review", "decline", "step_up"]
    risk_score: float = Field(ge=0, le=1, description="Calibrated probability of fraud.")
    risk_level: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    reasons: list[str] = Field(description="Stable machine-readable codes, most important first.")
    model_version: str
    priority: Literal["critical", "high", "normal", "low"]
    replayed: bool = Field(
        description="True when this id was already decided: the stored decision."
    )
    queue_ms: float
    processing_ms: float
    batch_size: int


class BatchDecisionOut(BaseModel):
    count: int
    results: list[DecisionOut]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: str = Field(
        pattern=r"^[A-Za-z0-9._:-]{1,64}$", description="A stored transaction (422 otherwise)."
    )
    fraud: bool
    labelled_at: str | None = Field(
        default=None,
        pattern=_RFC3339,
        description="RFC 3339 with an offset, not before the transaction's timestamp;"
        " defaults to now.",
    )


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[LabelIn] = Field(min_length=1, max_length=1000)


class LabelsOut(BaseModel):
    received: int
    applied: int


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, str]] | None = None
    indexes: list[int] | None = None
    #: A rule expression refused: where (0-based offset) and, for an unknown field, which.
    expression_error: dict[str, Any] | None = None


SCORING_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Priority",
        "in": "header",
        "required": False,
        "description": "Priority class (default normal). Any other value is a 422. Wins over Priority.",
        "schema": {"type": "string", "enum": ["critical", "high", "normal", "low"]},
    },
    {
        "name": "Priority",
        "in": "header",
        "required": False,
        "description": "RFC 9218: u=0-1 critical, 2 high, 3-4 normal, 5-7 low; malformed or"
        " out-of-range urgencies are ignored.",
        "schema": {"type": "string", "example": "u=1"},
    },
    {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "required": False,
        "description": "Shortens (never lengthens) the class deadline: critical 250 ms, high 500 ms,"
        " normal 1 s, low 5 s by default. At least 50 ms: a shorter budget is a 422.",
        "schema": {"type": "integer", "minimum": 50, "maximum": 999_999_999},
    },
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Echoed back in X-Request-Id (and written in the service's log lines)"
        " when it is 1-128 characters of A-Z a-z 0-9 . _ : -; else one is generated.",
        "schema": {"type": "string"},
    },
]


def body_ref(name: str, *, headers: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its own body: point at a component."""
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }
    if headers:
        extra["parameters"] = SCORING_HEADERS
    return extra


#: Models documented as components (their nested models come along).
REQUEST_MODELS: tuple[type[BaseModel], ...] = (TransactionIn, TransactionBatchIn, LabelsIn, Problem)


def component_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


_PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON (or a body the client stopped sending)",
    401: "No valid bearer token (with WWW-Authenticate)",
    403: "The token lacks the role this endpoint requires",
    404: "Not found",
    408: "The body did not arrive in time (SANKOFA_BODY_TIMEOUT_S, 10 s by default)",
    409: "Transaction id already used with other content",
    412: "If-Match names a version that is no longer the latest",
    413: "Body too large",
    415: "Wrong media type, a charset other than UTF-8, or a Content-Encoding",
    422: "Invalid field or header (which, and why)",
    429: "The client is over its request rate (with Retry-After)",
    431: "Request header fields too large (an oversized Authorization header too)",
    503: "Overloaded, draining or storage unavailable (with Retry-After)",
    504: "Deadline passed before scoring (with Retry-After)",
}
_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The problem answers a route can really give, for its OpenAPI description
    (a test holds each route to its list)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _PROBLEM_DESCRIPTIONS[code],
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        if code in (429, 503, 504):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


#: What each route can answer besides its 200. Every request may get a 431 (the
#: edge counts header bytes first); a body is read with a deadline (408), a size
#: limit (413) and a media type (415); scoring waits in the dispatcher (503
#: refused, 504 deadline) and may meet a stored id with other content (409);
#: labels are stored in one transaction (503 when PostgreSQL does not answer)
#: and name unknown transactions as invalid fields (422), never 404.
SCORING_RESPONSES: Final = problem_responses(400, 408, 409, 413, 415, 422, 431, 503, 504)
LABELS_RESPONSES: Final = problem_responses(400, 408, 413, 415, 422, 431, 503)
READ_RESPONSES: Final = problem_responses(404, 422, 431, 503)
