"""OpenAPI shapes of the rules, lists and limits API, for ``/docs`` and the
schema fuzz test. As for scoring, the routes validate by hand
(``rules.model``, one message per broken rule); these only describe."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from sankofa.api.schemas import problem_responses
from sankofa.rules.expr import MAX_EXPRESSION_CHARS
from sankofa.rules.model import MAX_DESCRIPTION_CHARS, MAX_PRIORITY, MAX_REASON_CHARS

_RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_AMOUNT = r"^[0-9]{1,16}(\.[0-9]{1,2})?$"


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_RULE_ID, description="Required on POST; on PUT, if given, the path's.")
    action: Literal["decline", "review", "step_up", "allow"]
    priority: int = Field(ge=0, le=MAX_PRIORITY, description="Lower decides first; ties by id.")
    mode: Literal["active", "shadow"] = "active"
    expression: str = Field(
        max_length=MAX_EXPRESSION_CHARS,
        examples=['type == "pix" and amount > 1000 and is_night'],
    )
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)


class RuleUpdate(BaseModel):
    """PUT: every field optional; a field left out keeps the latest version's value
    (null is not "left out": the schema does not admit it)."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=_RULE_ID)] | SkipJsonSchema[None] = Field(
        default=None, description="If given, the path's."
    )
    action: Literal["decline", "review", "step_up", "allow"] | SkipJsonSchema[None] = None
    priority: Annotated[int, Field(ge=0, le=MAX_PRIORITY)] | SkipJsonSchema[None] = None
    mode: Literal["active", "shadow"] | SkipJsonSchema[None] = None
    expression: Annotated[str, Field(max_length=MAX_EXPRESSION_CHARS)] | SkipJsonSchema[None] = None
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | SkipJsonSchema[None] = (
        None
    )


class ListEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=128, description="In clear; kept as an HMAC.")
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    expires_at: str | None = Field(default=None, description="RFC 3339 with an offset, future.")


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    night_pix_limit: str | None = Field(
        pattern=_AMOUNT, description="Reais; null: no night limit (e.g. a company)."
    )
    max_amount: str | None = Field(default=None, pattern=_AMOUNT, description="Null: no cap.")
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    expression: str = Field(max_length=MAX_EXPRESSION_CHARS)
    from_: str = Field(alias="from", description="RFC 3339, included.")
    to: str = Field(description="RFC 3339, excluded.")
    max_rows: int | None = Field(default=None, ge=1)


def body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route reading its own body: the model's schema inline."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }


_JSON = {"application/json": {"schema": {"type": "object"}}}


def responses(*success: int, precondition: bool = False) -> dict[int | str, dict[str, Any]]:
    """The success codes given, then every problem a route of this API can answer
    (412 too where the route takes ``If-Match``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in success:
        if code == 204:
            out[code] = {"description": "Done; no content"}
        else:
            out[code] = {"description": "OK" if code == 200 else "Created", "content": _JSON}
    codes = (400, 404, 408, 409, *((412,) if precondition else ()), 413, 415, 422, 431, 503)
    problems = problem_responses(*codes)
    out.update(problems)
    out[409] = {**problems[409], "description": "Rule id taken, or changed meanwhile"}
    return out
