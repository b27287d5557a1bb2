"""The admin API of rules, lists and limits (``sankofa.rules``), and the backtest.

Writes go to the primary in one transaction each; a rule write makes this
process's snapshot current before it answers, other instances follow within
``SANKOFA_RULES_REFRESH_S``. Customers, devices and IP addresses are given in
clear and kept only as the keyed HMACs the transactions carry, so answers name
them by ``value_ref``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Final, Literal, TypeVar

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from sankofa.api import rules_schemas as RS
from sankofa.api.body import read_json
from sankofa.api.headers import scan_headers
from sankofa.api.services import Services
from sankofa.auth.rbac import requires
from sankofa.auth.roles import ADMIN, ANALYST
from sankofa.engine.scorer import DB_DOWN
from sankofa.errors import (
    FieldIssue,
    InvalidFieldError,
    NotFoundError,
    PreconditionFailedError,
    RuleConflictError,
    StorageUnavailableError,
)
from sankofa.privacy import documents
from sankofa.privacy.cards import pan_fields
from sankofa.rules import backtest as bt
from sankofa.rules import store
from sankofa.rules.book import entity_key
from sankofa.rules.model import (
    LIST_KINDS,
    LIST_NAMES,
    RULE_ID,
    RuleSpec,
    money,
    parse_entry,
    parse_limits,
    parse_rule,
)
from sankofa.rules.verdict import RulesEngine
from sankofa.store import audit as trail

log = logging.getLogger(__name__)
router = APIRouter()
T = TypeVar("T")

_TAGS: Final[list[str | Enum]] = ["rules"]
#: Most items one list page holds.
MAX_PAGE: Final = 1000


def _json(body: Any, status: int = 200) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, media_type="application/json")


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _rules(s: Services) -> RulesEngine:
    if s.rules is None:  # pragma: no cover - always wired by open_services
        raise NotFoundError("rules are not enabled")
    return s.rules


async def _db(s: Services, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """One transaction on the primary, bounded; the database away is a 503."""
    try:
        async with asyncio.timeout(s.settings.db_timeout_s):
            async with s.pool.acquire() as conn, conn.transaction():
                return await work(conn)
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc


def _actor(request: Request) -> str | None:
    """Who made a change, for the audit trail: the token's subject (None in
    development mode, where no token is asked for)."""
    principal = request.scope.get("sankofa.principal")
    subject = getattr(principal, "subject", None)
    return str(subject) if subject is not None else None


async def _db_audited(
    s: Services,
    request: Request,
    kind: str,
    details: Callable[[Any], dict[str, Any] | None],
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    """``_db`` for a change: its audit record (``sankofa.store.audit``) is written
    in the same transaction, last. ``details(result)`` says what changed (no
    customer, device or address reference: the trail is never erased); None
    records nothing (the change did not happen)."""

    async def both(conn: asyncpg.Connection) -> T:
        result = await work(conn)
        what = details(result)
        if what is not None:
            await trail.record(conn, kind, _actor(request), what)
        return result

    return await _db(s, both)


async def _refresh(s: Services) -> None:
    """Make this instance's rules snapshot current after a committed write. The
    write stands if this fails (the database went away just after it): the
    periodic refresh catches up, as on every other instance."""
    try:
        await _rules(s).book.refresh()
    except Exception as exc:
        log.warning("rules snapshot not refreshed after a write (%s)", type(exc).__name__)


async def _body(request: Request, s: Services) -> Any:
    body = await read_json(
        request, scan_headers(request.scope), s.settings.max_body_bytes, s.body_deadlines
    )
    refuse_pans(body)
    return body


def refuse_pans(value: Any, path: str = "") -> None:
    """A card number (PAN) anywhere in an admin input is a 422, never stored: in a
    rule, a list entry's value or reason, a limit's reason, or a path value."""
    where = pan_fields(value, path)
    if where:
        raise InvalidFieldError(
            [FieldIssue(w, "looks like a card number (PAN); not accepted here") for w in where]
        )


def _rule_id(rule_id: str) -> str:
    refuse_pans(rule_id, "rule_id (path)")
    if not RULE_ID.fullmatch(rule_id):
        raise NotFoundError(f"no rule {rule_id[:64]!r}")
    return rule_id


def _page(request: Request) -> tuple[int, str | None]:
    q = request.query_params
    raw = q.get("limit", "100")
    if not (raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
        raise InvalidFieldError([FieldIssue("limit", f"must be an integer from 1 to {MAX_PAGE}")])
    return int(raw), q.get("after")


# -- rules ---------------------------------------------------------------------


#: A rule's fields a PUT may leave out: each keeps the latest version's value.
_RULE_KEEPS: Final = ("action", "priority", "mode", "expression", "description")


#: Stand-ins for the fields a PUT leaves out, so its own fields can be checked
#: before the latest version is read (the placeholders themselves always pass).
_PLACEHOLDER: Final = {"action": "review", "priority": 0, "expression": "amount > 0"}


#: RFC 9110 8.8.3 entity-tag, printable ASCII only (ours are digits; a tag that
#: cannot be one of ours is not echoed back garbled).
_ENTITY_TAG: Final = re.compile(r'(?:W/)?"[\x21\x23-\x7e]*"')


def _etag(version: int) -> str:
    """A rule version's entity tag: its version number, a strong validator."""
    return f'"{version}"'


def _rule_response(rule: Any, status: int = 200) -> Response:
    response = _json(rule.view(), status)
    response.headers["ETag"] = _etag(rule.version)
    return response


def _if_match(request: Request) -> list[str] | None:
    """The entity tags of ``If-Match`` (RFC 9110 13.1.1), its lines joined; None
    when absent. Weak tags (``W/"3"``) are kept as sent and never match, since
    If-Match compares strongly."""
    lines = request.headers.getlist("if-match")
    if not lines:
        return None
    tags = [t.strip() for line in lines for t in line.split(",") if t.strip()]
    if not tags:
        raise InvalidFieldError([FieldIssue("header If-Match", "is empty")])
    # "*" stands alone; anything else is a list of quoted tags. A malformed value
    # is the client's mistake to fix (422), not a version that moved on (412).
    if tags != ["*"] and not all(_ENTITY_TAG.fullmatch(t) for t in tags):
        raise InvalidFieldError(
            [FieldIssue("header If-Match", 'must be * alone or entity tags such as "3" (ASCII)')]
        )
    return tags


def _check_version(rule_id: str, tags: list[str] | None, latest: int) -> None:
    """A change conditioned on a version (``If-Match``) is refused with 412 when
    the rule has moved on, so two analysts editing one rule cannot overwrite
    each other's version unseen. ``*`` matches any existing version."""
    if tags is None or "*" in tags or _etag(latest) in tags:
        return
    raise PreconditionFailedError(
        f"rule {rule_id} is at version {latest}; If-Match named {', '.join(tags)[:100]}:"
        " read it again and retry"
    )


def _rule_change(op: str) -> Callable[[Any], dict[str, Any]]:
    def details(rule: Any) -> dict[str, Any]:
        return {
            "op": op,
            "id": rule.rule_id,
            "version": rule.version,
            "action": rule.action,
            "mode": rule.mode,
            "priority": rule.priority,
        }

    return details


@router.post(
    "/v1/rules",
    dependencies=[requires(ADMIN)],
    summary="Create a rule (version 1)",
    status_code=201,
    tags=_TAGS,
    responses=RS.responses(201),
    openapi_extra=RS.body(RS.RuleIn),
)
async def create_rule(request: Request) -> Response:
    s = _services(request)
    spec, _ = parse_rule(await _body(request, s))

    async def work(conn: asyncpg.Connection) -> Any:
        prior = await store.latest(conn, spec.rule_id)
        if prior is not None and not prior.deleted:
            raise RuleConflictError(
                f"rule {spec.rule_id} exists (version {prior.version}); PUT to change it"
            )
        # A deleted id may be created again: its history goes on.
        return await store.append(conn, spec, version=1 if prior is None else prior.version + 1)

    rule = await _db_audited(s, request, "rules.change", _rule_change("create"), work)
    await _refresh(s)
    return _rule_response(rule, 201)


@router.get(
    "/v1/rules",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="The rules in force",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def list_rules(request: Request) -> Response:
    s = _services(request)
    rev, rules = await _db(s, store.current_rules)
    rules.sort(key=lambda r: (r.mode != "active", r.priority, r.rule_id))
    return _json({"revision": rev, "rules": [r.view() for r in rules]})


@router.get(
    "/v1/rules/{rule_id}",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="A rule in force (its latest version)",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def get_rule(request: Request, rule_id: str) -> Response:
    s = _services(request)
    rid = _rule_id(rule_id)
    rule = await _db(s, lambda conn: store.latest(conn, rid))
    if rule is None or rule.deleted:
        raise NotFoundError(f"no rule {rid}")
    return _rule_response(rule)


@router.get(
    "/v1/rules/{rule_id}/versions",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="Every version of a rule, deletions included",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def rule_versions(request: Request, rule_id: str) -> Response:
    s = _services(request)
    rid = _rule_id(rule_id)
    versions = await _db(s, lambda conn: store.history(conn, rid))
    if not versions:
        raise NotFoundError(f"no rule {rid}")
    return _json({"id": rid, "versions": [r.view() for r in versions]})


@router.put(
    "/v1/rules/{rule_id}",
    dependencies=[requires(ADMIN)],
    summary="Change a rule: a new version",
    description=(
        "Fields left out keep the latest version's values (a PUT naming only"
        " `expression` leaves the action, priority, mode and description as they"
        ' were). With `If-Match: "N"` (the `ETag` of a GET) the change is made only'
        " if N is still the latest version, else 412."
    ),
    tags=_TAGS,
    responses=RS.responses(200, precondition=True),
    openapi_extra=RS.body(RS.RuleUpdate),
)
async def update_rule(request: Request, rule_id: str) -> Response:
    s = _services(request)
    rid = _rule_id(rule_id)
    tags = _if_match(request)
    body = await _body(request, s)
    if isinstance(body, dict):
        nulls = [k for k, v in body.items() if v is None]
        if nulls:
            raise InvalidFieldError(
                [FieldIssue(k, "must not be null: leave it out to keep its value") for k in nulls]
            )
        if not set(body) & set(_RULE_KEEPS) and set(body) <= {"id"}:
            raise InvalidFieldError(
                [FieldIssue("body", f"names nothing to change (any of {', '.join(_RULE_KEEPS)})")]
            )
    # Validated once before the database is asked (a bad body costs no
    # connection), then again merged with the latest version.
    parse_rule({**_PLACEHOLDER, **body} if isinstance(body, dict) else body, rule_id=rid)

    async def work(conn: asyncpg.Connection) -> Any:
        prior = await store.latest(conn, rid)
        if prior is None or prior.deleted:
            raise NotFoundError(f"no rule {rid}; POST /v1/rules creates one")
        _check_version(rid, tags, prior.version)
        kept = {
            "action": prior.action,
            "priority": prior.priority,
            "mode": prior.mode,
            "expression": prior.expression,
            "description": prior.description,
        }
        spec, _ = parse_rule({**kept, **body}, rule_id=rid)
        return await store.append(conn, spec, version=prior.version + 1)

    rule = await _db_audited(s, request, "rules.change", _rule_change("update"), work)
    await _refresh(s)
    return _rule_response(rule)


@router.delete(
    "/v1/rules/{rule_id}",
    dependencies=[requires(ADMIN)],
    summary="Retire a rule (its history is kept)",
    status_code=204,
    tags=_TAGS,
    responses=RS.responses(204, precondition=True),
)
async def delete_rule(request: Request, rule_id: str) -> Response:
    s = _services(request)
    rid = _rule_id(rule_id)
    tags = _if_match(request)

    async def work(conn: asyncpg.Connection) -> tuple[str, int]:
        prior = await store.latest(conn, rid)
        if prior is None or prior.deleted:
            raise NotFoundError(f"no rule {rid}")
        _check_version(rid, tags, prior.version)
        spec = RuleSpec(
            rid, prior.action, prior.priority, prior.mode, prior.expression, prior.description
        )
        await store.append(conn, spec, version=prior.version + 1, deleted=True)
        return spec.rule_id, prior.version + 1

    await _db_audited(
        s,
        request,
        "rules.change",
        lambda done: {"op": "delete", "id": done[0], "version": done[1]},
        work,
    )
    await _refresh(s)
    return Response(status_code=204)


@router.post(
    "/v1/rules/backtest",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="How many stored transactions a draft rule would have hit, with their labels",
    tags=_TAGS,
    responses=RS.responses(200),
    openapi_extra=RS.body(RS.BacktestIn),
)
async def backtest(request: Request) -> Response:
    s = _services(request)
    req = bt.parse_request(await _body(request, s), max_rows=s.settings.backtest_max_rows)
    try:
        async with s.pool.acquire() as conn:
            result = await bt.run(conn, req, fetch_timeout_s=s.settings.db_timeout_s)
    except DB_DOWN as exc:
        raise StorageUnavailableError(f"storage unavailable: {type(exc).__name__}") from exc
    return _json(result)


# -- lists ---------------------------------------------------------------------


def _list_kind(list_name: str, kinds: str) -> str:
    if list_name not in LIST_NAMES or kinds not in LIST_KINDS:
        raise NotFoundError(
            f"no list /v1/lists/{list_name[:16]}/{kinds[:16]}: the lists are"
            " /v1/lists/{hot|allow}/{customers|terminals|devices|ips}"
        )
    return LIST_KINDS[kinds]


#: ``?customer_id_type=cpf|cnpj``: the id is a taxpayer number, normalised as a
#: transaction's ``customer_id`` with that ``customer_id_type`` is, so that a
#: limit or a list entry set by "529.982.247-25" reaches those transactions.
IdType = Annotated[
    Literal["cpf", "cnpj"] | None,
    Query(
        description="The customer id is a CPF or CNPJ (any punctuation): checked and"
        " normalised as a transaction's customer_id with this customer_id_type is."
    ),
]


def _value_ref(
    s: Services,
    kind: str,
    value: str,
    field: str = "value",
    *,
    writing: bool = False,
    id_type: str | None = None,
) -> str:
    """The stored key of a list or limits value. ``writing``: a new entry, which
    must be one a transaction can carry (reads and deletes still reach entries
    written before that rule). ``id_type``: a CPF or CNPJ, normalised first."""
    if not (1 <= len(value) <= 128 and value.isprintable()):
        raise InvalidFieldError([FieldIssue(field, "must be 1-128 printable characters")])
    if writing and value != value.strip():
        # As for transactions, which refuse such an id: an entry under it could
        # never match one.
        raise InvalidFieldError([FieldIssue(field, "must not start or end with whitespace")])
    if id_type is not None:
        if kind != "customer":
            raise InvalidFieldError(
                [FieldIssue("customer_id_type (query)", "applies to customers only")]
            )
        normal = documents.normalise(id_type, value)
        if normal is None:
            raise InvalidFieldError(
                [FieldIssue(field, f"is not a valid {id_type.upper()} (format or check digits)")]
            )
        return s.parser.pseudonymise(kind, normal)
    refuse_pans(value, field)
    if kind == "terminal":
        return value
    if kind == "ip":
        if "%" in value:
            # As for transactions: a zone names an interface of the sender's host,
            # so an entry with one could never match a transaction.
            raise InvalidFieldError(
                [FieldIssue(field, "must be an IPv4 or IPv6 address without a zone (%...)")]
            )
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidFieldError(
                [FieldIssue(field, "must be an IPv4 or IPv6 address")]
            ) from None
    return s.parser.pseudonymise(kind, value)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def _entry_view(e: store.StoredEntry, now_s: float) -> dict[str, Any]:
    return {
        "list": e.list,
        "kind": e.kind,
        "value_ref": e.value_ref,
        "reason": e.reason,
        "expires_at": _iso(e.expires_at),
        "active": e.expires_at is None or e.expires_at.timestamp() > now_s,
        "created_at": _iso(e.created_at),
        "updated_at": _iso(e.updated_at),
    }


@router.post(
    "/v1/lists/{list_name}/{kinds}",
    dependencies=[requires(ADMIN)],
    summary="Add (201) or replace (200) an entry of a hot or allow list",
    tags=_TAGS,
    responses=RS.responses(200, 201),
    openapi_extra=RS.body(RS.ListEntryIn),
)
async def put_entry(
    request: Request, list_name: str, kinds: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    kind = _list_kind(list_name, kinds)
    rules = _rules(s)
    entry = parse_entry(await _body(request, s), now_s=rules.wall_clock())
    ref = _value_ref(s, kind, entry.value, writing=True, id_type=customer_id_type)
    stored, created = await _db_audited(
        s,
        request,
        "lists.change",
        lambda _: {"op": "put", "list": list_name, "kind": kind},
        lambda conn: store.put_entry(conn, list_name, kind, ref, entry),
    )
    await rules.invalidate([entity_key(kind, ref)])
    return _json(_entry_view(stored, rules.wall_clock()), 201 if created else 200)


@router.get(
    "/v1/lists/{list_name}/{kinds}",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="A list's entries, by value_ref",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def get_entries(request: Request, list_name: str, kinds: str) -> Response:
    s = _services(request)
    kind = _list_kind(list_name, kinds)
    limit, after = _page(request)
    found = await _db(
        s, lambda conn: store.entries(conn, list_name, kind, limit=limit, after=after)
    )
    now_s = _rules(s).wall_clock()
    return _json(
        {
            "entries": [_entry_view(e, now_s) for e in found],
            "next": found[-1].value_ref if len(found) == limit else None,
        }
    )


@router.get(
    "/v1/lists/{list_name}/{kinds}/{value}",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="One entry, by its value",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def get_entry(
    request: Request, list_name: str, kinds: str, value: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    kind = _list_kind(list_name, kinds)
    ref = _value_ref(s, kind, value, "value (path)", id_type=customer_id_type)
    found = await _db(s, lambda conn: store.get_entry(conn, list_name, kind, ref))
    if found is None:
        raise NotFoundError(f"not on the {list_name} list of {kinds}")
    return _json(_entry_view(found, _rules(s).wall_clock()))


@router.delete(
    "/v1/lists/{list_name}/{kinds}/{value}",
    dependencies=[requires(ADMIN)],
    summary="Remove an entry",
    status_code=204,
    tags=_TAGS,
    responses=RS.responses(204),
)
async def delete_entry(
    request: Request, list_name: str, kinds: str, value: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    kind = _list_kind(list_name, kinds)
    ref = _value_ref(s, kind, value, "value (path)", id_type=customer_id_type)
    if not await _db_audited(
        s,
        request,
        "lists.change",
        lambda gone: {"op": "delete", "list": list_name, "kind": kind} if gone else None,
        lambda conn: store.delete_entry(conn, list_name, kind, ref),
    ):
        raise NotFoundError(f"not on the {list_name} list of {kinds}")
    await _rules(s).invalidate([entity_key(kind, ref)])
    return Response(status_code=204)


# -- limits --------------------------------------------------------------------


def _limits_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_ref": row["customer_ref"],
        "night_pix_limit": money(row["night_pix_limit_cents"]),
        "max_amount": money(row["max_amount_cents"]),
        "reason": row["reason"],
        "updated_at": _iso(row["updated_at"]),
        "default": False,
    }


def _defaults(s: Services) -> dict[str, Any]:
    lim = _rules(s).limits
    return {
        "night_pix_limit": money(lim.night_pix_limit_cents),
        "night_start": f"{lim.night_start_hour:02d}:00",
        "night_end": f"{lim.night_end_hour:02d}:00",
        "timezone": lim.timezone.key,
        "max_amount": None,
    }


@router.get(
    "/v1/limits",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="The default limits",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def get_defaults(request: Request) -> Response:
    return _json(_defaults(_services(request)))


@router.get(
    "/v1/limits/customers",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="Customers with limits of their own",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def list_limits(request: Request) -> Response:
    s = _services(request)
    limit, after = _page(request)
    rows = await _db(s, lambda conn: store.all_limits(conn, limit=limit, after=after))
    return _json(
        {
            "limits": [_limits_view(r) for r in rows],
            "next": rows[-1]["customer_ref"] if len(rows) == limit else None,
        }
    )


@router.put(
    "/v1/limits/customers/{customer_id}",
    dependencies=[requires(ADMIN)],
    summary="Set a customer's own limits",
    tags=_TAGS,
    responses=RS.responses(200),
    openapi_extra=RS.body(RS.LimitsIn),
)
async def put_limits(
    request: Request, customer_id: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    ref = _value_ref(
        s, "customer", customer_id, "customer_id (path)", writing=True, id_type=customer_id_type
    )
    lim = parse_limits(await _body(request, s))
    row = await _db_audited(
        s,
        request,
        "limits.change",
        lambda _: {"op": "put"},
        lambda conn: store.put_limits(conn, ref, lim),
    )
    await _rules(s).invalidate([entity_key("customer", ref)])
    return _json(_limits_view(row))


@router.get(
    "/v1/limits/customers/{customer_id}",
    dependencies=[requires(ADMIN, ANALYST)],
    summary="A customer's limits: their own, or the defaults",
    tags=_TAGS,
    responses=RS.responses(200),
)
async def get_limits(
    request: Request, customer_id: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    ref = _value_ref(s, "customer", customer_id, "customer_id (path)", id_type=customer_id_type)
    row = await _db(s, lambda conn: store.get_limits(conn, ref))
    if row is None:
        d = _defaults(s)
        return _json(
            {
                "customer_ref": ref,
                "night_pix_limit": d["night_pix_limit"],
                "max_amount": None,
                "reason": "",
                "updated_at": None,
                "default": True,
            }
        )
    return _json(_limits_view(row))


@router.delete(
    "/v1/limits/customers/{customer_id}",
    dependencies=[requires(ADMIN)],
    summary="Back to the default limits",
    status_code=204,
    tags=_TAGS,
    responses=RS.responses(204),
)
async def delete_limits(
    request: Request, customer_id: str, customer_id_type: IdType = None
) -> Response:
    s = _services(request)
    ref = _value_ref(s, "customer", customer_id, "customer_id (path)", id_type=customer_id_type)
    if not await _db_audited(
        s,
        request,
        "limits.change",
        lambda gone: {"op": "delete"} if gone else None,
        lambda conn: store.delete_limits(conn, ref),
    ):
        raise NotFoundError("this customer has no limits of their own")
    await _rules(s).invalidate([entity_key("customer", ref)])
    return Response(status_code=204)
