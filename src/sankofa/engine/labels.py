"""Labels: what became known about a transaction later (a chargeback, a verdict).

``{"labels": [{"transaction_id", "fraud": true|false, "labelled_at"?}]}``, up
to the batch limit, all or nothing: a bad item, a repeated id or an unknown
transaction refuses the request (422 with the indexes) and stores nothing.
``labelled_at`` defaults to the time the label is received; of two labels for
one transaction, the one with the later ``labelled_at`` is kept. A label cannot
be known before its transaction happened: a ``labelled_at`` earlier than the
transaction's timestamp is refused (422); a defaulted one is never earlier
than it (a transaction stamped a little ahead of the server's clock).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from sankofa.engine import constants as C
from sankofa.engine.transaction import parse_timestamp
from sankofa.errors import BodyTooLargeError, FieldIssue, InvalidFieldError
from sankofa.store.repository import LabelIn

_TXID: Final = re.compile(C.TRANSACTION_ID_PATTERN)
_FIELDS: Final = frozenset({"transaction_id", "fraud", "labelled_at"})


def _missing(obj: dict[str, object], name: str) -> str | None:
    if name not in obj:
        return "is required"
    if obj[name] is None:
        return "is required, not null"
    return None


def parse_labels(
    body: object, *, max_items: int, max_clock_skew_s: float = 3600.0
) -> list[LabelIn]:
    if not isinstance(body, dict) or not isinstance(body.get("labels"), list):
        raise InvalidFieldError([FieldIssue("labels", "must be a list of label objects")])
    extra = body.keys() - {"labels"}
    if extra:
        raise InvalidFieldError([FieldIssue(k, "unknown field") for k in sorted(extra)])
    items = body["labels"]
    if not items:
        raise InvalidFieldError([FieldIssue("labels", "must hold at least one label")])
    if len(items) > max_items:
        raise BodyTooLargeError(f"at most {max_items} labels per request, got {len(items)}")
    now = datetime.now(UTC)
    latest_s = now.timestamp() + max_clock_skew_s
    out: list[LabelIn] = []
    issues: list[FieldIssue] = []
    seen: dict[str, int] = {}
    for i, obj in enumerate(items):
        where = f"labels[{i}]"
        if not isinstance(obj, dict):
            issues.append(FieldIssue(where, "must be a JSON object"))
            continue
        for k in sorted(obj.keys() - _FIELDS):
            issues.append(FieldIssue(f"{where}.{k}", "unknown field"))
        txid = obj.get("transaction_id")
        if not (isinstance(txid, str) and _TXID.fullmatch(txid)):
            issues.append(
                FieldIssue(
                    f"{where}.transaction_id",
                    _missing(obj, "transaction_id")
                    or "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
                )
            )
            continue
        first = seen.setdefault(txid, i)
        if first != i:
            issues.append(FieldIssue(f"{where}.transaction_id", f"repeats label {first}"))
        fraud = obj.get("fraud")
        if not isinstance(fraud, bool):
            issues.append(
                FieldIssue(f"{where}.fraud", _missing(obj, "fraud") or "must be true or false")
            )
            continue
        if obj.get("labelled_at") is None:
            out.append(LabelIn(txid, fraud, now, labelled_at_given=False))
            continue
        labelled_at, refused = parse_timestamp(obj["labelled_at"], latest_s)
        if refused:
            issues.append(FieldIssue(f"{where}.labelled_at", refused))
            continue
        out.append(LabelIn(txid, fraud, labelled_at))
    if issues:
        raise InvalidFieldError(issues)
    return out
