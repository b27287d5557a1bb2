"""A rule, a list entry and a customer's limits: their shapes and the checks of
what the admin API receives (every broken rule reported, each with its field).

A rule: ``id`` (1-64 of ``A-Z a-z 0-9 . _ -``, starting with a letter or
digit), ``action`` (``decline``, ``review``, ``step_up``, ``allow``),
``priority`` (an integer, 0 to 1,000,000; lower is stronger: among the
active rules matching a transaction, the lowest priority decides, ties by id),
``mode`` (``active`` decides; ``shadow`` is recorded, never acted on),
``expression`` (``rules.expr``) and an optional ``description``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sankofa.engine.transaction import parse_amount, parse_timestamp
from sankofa.errors import FieldIssue, InvalidFieldError, RuleExpressionError
from sankofa.rules.compile import CompiledExpression, compile_expression
from sankofa.rules.expr import ExpressionError

ACTIONS: Final = ("decline", "review", "step_up", "allow")
MODES: Final = ("active", "shadow")
#: What each rule action makes of the decision.
ACTION_DECISION: Final = {
    "decline": "decline",
    "review": "review",
    "step_up": "step_up",
    "allow": "approve",
}
RULE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_PRIORITY: Final = 1_000_000
MAX_DESCRIPTION_CHARS: Final = 500
MAX_REASON_CHARS: Final = 500
LIST_NAMES: Final = ("hot", "allow")
#: URL segment -> kind stored (and pseudonymiser domain).
LIST_KINDS: Final = {
    "customers": "customer",
    "terminals": "terminal",
    "devices": "device",
    "ips": "ip",
}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a client asks a rule to be (before it has a version)."""

    rule_id: str
    action: str
    priority: int
    mode: str
    expression: str
    description: str


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    version: int
    action: str
    priority: int
    mode: str
    expression: str
    description: str
    created_at: datetime
    deleted: bool = False

    @property
    def tag(self) -> str:
        """How decisions name it: ``id@version``."""
        return f"{self.rule_id}@{self.version}"

    def view(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "version": self.version,
            "action": self.action,
            "priority": self.priority,
            "mode": self.mode,
            "expression": self.expression,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            **({"deleted": True} if self.deleted else {}),
        }


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    condition: CompiledExpression


def compile_checked(expression: str, field: str = "expression") -> CompiledExpression:
    """Compile, or a 422 pointing at the problem in the text."""
    try:
        return compile_expression(expression)
    except ExpressionError as exc:
        raise RuleExpressionError(
            field, exc.message, position=exc.position, name=exc.name
        ) from None


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidFieldError([FieldIssue("body", "must be a JSON object")])
    return body


def _unknown(body: dict[str, Any], allowed: set[str], issues: list[FieldIssue]) -> None:
    for k in sorted(body.keys() - allowed):
        issues.append(FieldIssue(str(k), "unknown field"))


def _text(
    body: dict[str, Any], name: str, issues: list[FieldIssue], *, max_chars: int, default: str
) -> str:
    v = body.get(name, default)
    if v is None:
        v = default
    if not isinstance(v, str) or len(v) > max_chars or not v.isprintable():
        issues.append(FieldIssue(name, f"must be printable text of at most {max_chars} characters"))
        return default
    return v


_RULE_FIELDS: Final = {"id", "action", "priority", "mode", "expression", "description"}


def parse_rule(body: object, *, rule_id: str | None = None) -> tuple[RuleSpec, CompiledExpression]:
    """A rule body (POST: with ``id``; PUT: ``rule_id`` from the path, ``id`` optional
    and then equal). Raises InvalidFieldError / RuleExpressionError (422)."""
    b = _object(body)
    issues: list[FieldIssue] = []
    _unknown(b, _RULE_FIELDS, issues)
    rid = b.get("id", rule_id)
    if rule_id is not None and rid != rule_id:
        issues.append(FieldIssue("id", "must match the id in the path"))
    elif not (isinstance(rid, str) and RULE_ID.fullmatch(rid)):
        issues.append(
            FieldIssue(
                "id", "is required: 1-64 characters of A-Z a-z 0-9 . _ - (a letter or digit first)"
            )
        )
    action = b.get("action")
    if action not in ACTIONS:
        issues.append(FieldIssue("action", f"must be one of {', '.join(ACTIONS)}"))
    priority = b.get("priority")
    if not (
        isinstance(priority, int)
        and not isinstance(priority, bool)
        and 0 <= priority <= MAX_PRIORITY
    ):
        issues.append(
            FieldIssue(
                "priority", f"must be an integer from 0 to {MAX_PRIORITY} (lower decides first)"
            )
        )
    mode = b.get("mode", "active")
    if mode not in MODES:
        issues.append(FieldIssue("mode", f"must be one of {', '.join(MODES)}"))
    description = _text(b, "description", issues, max_chars=MAX_DESCRIPTION_CHARS, default="")
    expression = b.get("expression")
    if not isinstance(expression, str):
        issues.append(FieldIssue("expression", "is required: a string"))
    if issues:
        raise InvalidFieldError(issues)
    assert isinstance(rid, str) and isinstance(expression, str) and isinstance(priority, int)
    compiled = compile_checked(expression)
    return RuleSpec(rid, str(action), priority, str(mode), expression, description), compiled


@dataclass(frozen=True, slots=True)
class ListEntryIn:
    value: str
    reason: str
    expires_at: datetime | None


_ENTRY_FIELDS: Final = {"value", "reason", "expires_at"}


def parse_entry(body: object, *, now_s: float) -> ListEntryIn:
    b = _object(body)
    issues: list[FieldIssue] = []
    _unknown(b, _ENTRY_FIELDS, issues)
    value = b.get("value")
    if not (isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()):
        issues.append(FieldIssue("value", "is required: 1-128 printable characters"))
    reason = b.get("reason")
    if not (
        isinstance(reason, str) and 1 <= len(reason) <= MAX_REASON_CHARS and reason.isprintable()
    ):
        issues.append(
            FieldIssue("reason", f"is required: 1-{MAX_REASON_CHARS} printable characters")
        )
    expires_at: datetime | None = None
    raw = b.get("expires_at")
    if raw is not None:
        dt, why = parse_timestamp(raw)
        if why:
            issues.append(FieldIssue("expires_at", why))
        elif dt.timestamp() <= now_s:
            issues.append(FieldIssue("expires_at", "must be in the future"))
        else:
            expires_at = dt
    if issues:
        raise InvalidFieldError(issues)
    assert isinstance(value, str) and isinstance(reason, str)
    return ListEntryIn(value, reason, expires_at)


@dataclass(frozen=True, slots=True)
class LimitsIn:
    night_pix_limit_cents: int | None
    max_amount_cents: int | None
    reason: str


_LIMIT_FIELDS: Final = {"night_pix_limit", "max_amount", "reason"}


def _cents(b: dict[str, Any], name: str, issues: list[FieldIssue]) -> int | None:
    raw = b.get(name)
    if raw is None:
        return None
    amount, why = parse_amount(raw)
    if why:
        issues.append(FieldIssue(name, f"{why}; or null for no limit"))
        return None
    return int(amount.scaleb(2))


def parse_limits(body: object) -> LimitsIn:
    """``night_pix_limit`` is required (an amount, or null: no night limit, as for a
    company); ``max_amount`` optional (absent or null: no cap)."""
    b = _object(body)
    issues: list[FieldIssue] = []
    _unknown(b, _LIMIT_FIELDS, issues)
    if "night_pix_limit" not in b:
        issues.append(
            FieldIssue("night_pix_limit", "is required: an amount, or null for no night limit")
        )
    night = _cents(b, "night_pix_limit", issues)
    cap = _cents(b, "max_amount", issues)
    reason = _text(b, "reason", issues, max_chars=MAX_REASON_CHARS, default="")
    if issues:
        raise InvalidFieldError(issues)
    return LimitsIn(night, cap, reason)


def money(cents: int | None) -> str | None:
    return None if cents is None else str(Decimal(cents).scaleb(-2).quantize(Decimal("0.01")))
