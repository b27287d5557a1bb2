"""Lists, limits and rules combined with the model's decision, for a whole batch.

Precedence, strongest first (the first that applies decides; the model's
score, risk level and reasons are always kept and follow the deciding reason):

1. **Hot list** (customer, terminal, device, IP; unexpired): ``decline``,
   ``HOT_LIST_<KIND>``. Before the allow list: a compromised terminal or a
   stolen device is declined even for a customer on the allow list.
2. **Limits** of the customer: the BACEN night-time PIX limit, a total per
   night (a PIX that would take the customer's PIX of that night, between
   ``night_start_hour`` and ``night_end_hour`` in ``timezone``, above it; the
   stored ones not declined and the batch's own earlier ones count:
   ``rules.night``), and the customer's cap on any transaction: ``decline``,
   ``LIMIT_NIGHT_PIX`` / ``LIMIT_MAX_AMOUNT``.
   Before the allow list, since the limit is a regulation, not a fraud judgement.
3. **Allow list** (unexpired): ``approve``, ``ALLOW_LIST_<KIND>``.
4. **Active rules** by priority (lowest number first, ties by id): the first
   matching rule's action (``allow`` approves), ``RULE:<id>``.
5. **Score thresholds** (``engine.decision``).

Every active and shadow rule is evaluated on the whole batch whatever decided;
the matching ones are stored with the decision (``rule_hits``,
``shadow_rule_hits``, as ``id@version``). Shadow rules never change anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
import numpy.typing as npt

from sankofa.engine.transaction import Transaction
from sankofa.rules.book import Entity, EntityLoader, Limits, RuleBook, RuleSet, entity_key
from sankofa.rules.fields import Columns, live_columns
from sankofa.rules.model import ACTION_DECISION, CompiledRule
from sankofa.rules.night import (
    NightKey,
    NightPixLedger,
    night_keys,
    night_window,
    night_window_of,
)

log = logging.getLogger(__name__)

REASON_LIMIT_NIGHT_PIX: Final = "LIMIT_NIGHT_PIX"
REASON_LIMIT_MAX_AMOUNT: Final = "LIMIT_MAX_AMOUNT"
RULE_REASON_PREFIX: Final = "RULE:"
_KINDS: Final = ("customer", "terminal", "device", "ip")
_HOT: Final = {k: f"HOT_LIST_{k.upper()}" for k in _KINDS}
_ALLOW: Final = {k: f"ALLOW_LIST_{k.upper()}" for k in _KINDS}


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The defaults; a customer's own limits (``customer_limits``) override them."""

    night_pix_limit_cents: int
    night_start_hour: int
    night_end_hour: int
    timezone: ZoneInfo
    #: The night of each UTC quarter hour seen (``rules.night.night_window_of``).
    quarters: dict[int, tuple[datetime, datetime] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.night_pix_limit_cents <= 0:
            raise ValueError("night_pix_limit_cents must be > 0")
        for name in ("night_start_hour", "night_end_hour"):
            if not 0 <= getattr(self, name) <= 23:
                raise ValueError(f"{name} must be 0..23")

    def night_of(self, t: Transaction) -> datetime | None:
        """The first instant (UTC) of the night ``t`` is in; None by day."""
        w = night_window_of(t, self)
        return None if w is None else w[0]

    def is_night(self, when: datetime) -> bool:
        return night_window(when, self) is not None


def batch_keys(txs: Sequence[Transaction]) -> list[str]:
    """Every list / limit key of a batch, once each."""
    keys: dict[str, None] = {}
    for t in txs:
        keys[entity_key("customer", t.customer_ref)] = None
        keys[entity_key("terminal", t.terminal_id)] = None
        if t.device_ref is not None:
            keys[entity_key("device", t.device_ref)] = None
        if t.ip_ref is not None:
            keys[entity_key("ip", t.ip_ref)] = None
    return list(keys)


def rule_masks(rules: Sequence[CompiledRule], cols: Columns) -> list[npt.NDArray[np.bool_]]:
    out: list[npt.NDArray[np.bool_]] = []
    for r in rules:
        try:
            out.append(r.condition(cols))
        except Exception:
            # Checked at compile time, so not expected; never fail the batch for it.
            log.exception("rule %s failed on a batch; counted as not matching", r.rule.tag)
            out.append(np.zeros(cols.n, dtype=np.bool_))
    return out


def _hits(
    rules: Sequence[CompiledRule], masks: Sequence[npt.NDArray[np.bool_]], n: int
) -> list[list[str] | None]:
    rows: list[list[str] | None] = [None] * n
    for r, m in zip(rules, masks, strict=True):
        tag = r.rule.tag
        for i in np.flatnonzero(m).tolist():
            row = rows[i]
            if row is None:
                rows[i] = [tag]
            else:
                row.append(tag)
    return rows


@dataclass(slots=True)
class Prepared:
    """What ``RulesEngine.prepare`` read for a batch."""

    entities: dict[str, Entity] = field(default_factory=dict)
    #: Cents of PIX already moved per (customer, night), stored and not declined.
    night_spent: dict[NightKey, int] = field(default_factory=dict)
    #: The batch's (customer, night) of its night PIX, with each night's end.
    night_keys: dict[NightKey, datetime] = field(default_factory=dict)


@dataclass(slots=True)
class Judged:
    rule_hits: list[list[str] | None]
    shadow_hits: list[list[str] | None]


class RulesEngine:
    """Reads what a batch needs (``prepare``) and applies it (``judge``)."""

    def __init__(
        self,
        *,
        book: RuleBook,
        entities: EntityLoader,
        limits: LimitPolicy,
        night: NightPixLedger | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.entities = entities
        self.limits = limits
        self.night = night
        self._wall_clock = wall_clock

    def wall_clock(self) -> float:
        """The clock list expiry is judged by (seconds since 1970)."""
        return self._wall_clock()

    async def invalidate(self, keys: Sequence[str]) -> None:
        """An admin write changed these keys' entries: a cache wrapping the loader
        (one with ``invalidate``) forgets them; the plain source has nothing to forget."""
        forget = getattr(self.entities, "invalidate", None)
        if forget is None:
            return
        try:
            await forget(keys)
        except Exception as exc:  # the write is committed; a cache failure is not the client's
            log.warning("cache invalidation of %d keys failed (%s)", len(keys), type(exc).__name__)

    async def prepare(self, txs: Sequence[Transaction]) -> Prepared:
        """One batched read of the lists and limits of the batch, and, beside it
        when the batch holds a night PIX, one of what those customers moved that
        night (never cached: every stored PIX changes it)."""
        if not txs:
            return Prepared()
        keys = night_keys(txs, self.limits) if self.night is not None else {}
        if not keys or self.night is None:
            return Prepared(await self.entities.load_many(batch_keys(txs)))
        async with asyncio.TaskGroup() as tg:
            entities = tg.create_task(self.entities.load_many(batch_keys(txs)))
            spent = tg.create_task(self.night.spent(keys))
        return Prepared(entities.result(), spent.result(), keys)

    async def recheck_night(self, conn: asyncpg.Connection, prepared: Prepared) -> Prepared | None:
        """On the connection that will store the batch: lock its customers' nights
        and read them again. None if nothing changed since ``prepare`` (the batch
        stands as judged); otherwise what to judge it again with."""
        if self.night is None or not prepared.night_keys:
            return None
        spent = await self.night.lock_and_read(conn, prepared.night_keys)
        if spent == prepared.night_spent:
            return None
        return Prepared(prepared.entities, spent, prepared.night_keys)

    def judge(
        self,
        txs: Sequence[Transaction],
        x: npt.NDArray[np.float64],
        entities: dict[str, Entity],
        decision: list[str],
        reasons: list[list[str]],
        *,
        ruleset: RuleSet | None = None,
        night_spent: Mapping[NightKey, int] | None = None,
    ) -> Judged:
        """Change ``decision`` and ``reasons`` in place by the precedence above.

        ``night_spent``: what ``prepare`` read of the customers' nights (None:
        nothing stored counts, only the batch's own earlier PIX)."""
        n = len(txs)
        rs = ruleset if ruleset is not None else self.book.current
        active_hits: list[list[str] | None] = [None] * n
        shadow_hits: list[list[str] | None] = [None] * n
        deciding: npt.NDArray[np.int64] = np.full(n, -1, dtype=np.int64)
        if n and (rs.active or rs.shadow):
            cols = live_columns(txs, x)
            if rs.active:
                masks = rule_masks(rs.active, cols)
                stacked = np.vstack(masks)
                any_hit = stacked.any(axis=0)
                deciding = np.where(any_hit, stacked.argmax(axis=0), -1)
                active_hits = _hits(rs.active, masks, n)
            if rs.shadow:
                shadow_hits = _hits(rs.shadow, rule_masks(rs.shadow, cols), n)
        now_s = self._wall_clock()
        # Only rows something can change are visited: a rule hit, a night PIX, or
        # an entry (list or own limits) on one of its keys.
        by_kind: dict[str, dict[str, Entity]] = {k: {} for k in _KINDS}
        for key, e in entities.items():
            kind, _, ref = key.partition(":")
            if kind in by_kind:
                by_kind[kind][ref] = e
        cust, term, dev, ips = (by_kind[k] for k in _KINDS)
        # Every night PIX: the night's total may be reached by small ones.
        night: dict[int, datetime] = {}
        for i, t in enumerate(txs):
            if t.type == "pix":
                first = self.limits.night_of(t)
                if first is not None:
                    night[i] = first
        hit_rows = (deciding >= 0).tolist()
        rows = [
            i
            for i, t in enumerate(txs)
            if hit_rows[i]
            or i in night
            or (
                entities
                and (
                    t.customer_ref in cust
                    or t.terminal_id in term
                    or (t.device_ref is not None and t.device_ref in dev)
                    or (t.ip_ref is not None and t.ip_ref in ips)
                )
            )
        ]
        if night:
            # The earlier PIX of a night takes the budget first, whatever the
            # order the batch was sent in.
            rows.sort(key=lambda i: txs[i].timestamp)
        spent_before = night_spent or {}
        running: dict[NightKey, int] = {}
        for i in rows:
            t = txs[i]
            first = night.get(i)
            nkey = None if first is None else (t.customer_ref, first)
            spent = 0 if nkey is None else spent_before.get(nkey, 0) + running.get(nkey, 0)
            self._decide_row(
                i, t, rs, deciding, now_s, by_kind, decision, reasons, night_spent=spent,
                is_night=nkey is not None,
            )  # fmt: skip
            if nkey is not None and decision[i] != "decline":
                # A night PIX left standing takes its part of the night's limit.
                running[nkey] = running.get(nkey, 0) + t.amount_cents
        return Judged(active_hits, shadow_hits)

    def _decide_row(
        self,
        i: int,
        t: Transaction,
        rs: RuleSet,
        deciding: npt.NDArray[np.int64],
        now_s: float,
        by_kind: dict[str, dict[str, Entity]],
        decision: list[str],
        reasons: list[list[str]],
        *,
        night_spent: int,
        is_night: bool,
    ) -> None:
        """One row by the precedence above; the first that applies decides."""
        hot: list[str] = []
        allow: list[str] = []
        limits: Limits | None = None
        found = (
            by_kind["customer"].get(t.customer_ref),
            by_kind["terminal"].get(t.terminal_id),
            None if t.device_ref is None else by_kind["device"].get(t.device_ref),
            None if t.ip_ref is None else by_kind["ip"].get(t.ip_ref),
        )
        for kind, entry in zip(_KINDS, found, strict=True):
            if entry is None:
                continue
            if entry.hot is not None and entry.hot.live(now_s):
                hot.append(_HOT[kind])
            if entry.allow is not None and entry.allow.live(now_s):
                allow.append(_ALLOW[kind])
            if kind == "customer":
                limits = entry.limits
        if hot:
            decision[i] = "decline"
            reasons[i][:0] = hot
            return
        over = self._over_limit(t, limits, night_spent=night_spent, is_night=is_night)
        if over is not None:
            decision[i] = "decline"
            reasons[i].insert(0, over)
            return
        if allow:
            decision[i] = "approve"
            reasons[i][:0] = allow
            return
        k = int(deciding[i])
        if k >= 0:
            rule = rs.active[k].rule
            decision[i] = ACTION_DECISION[rule.action]
            reasons[i].insert(0, RULE_REASON_PREFIX + rule.rule_id)

    def _over_limit(
        self, t: Transaction, limits: Limits | None, *, night_spent: int, is_night: bool
    ) -> str | None:
        """The limit a transaction breaks, if any. ``is_night``: a PIX in the
        night; ``night_spent``: the cents its customer already moved that night."""
        cap: int | None = None
        night: int | None = self.limits.night_pix_limit_cents
        if limits is not None:
            cap = limits.max_amount_cents
            night = limits.night_pix_limit_cents
        if cap is not None and t.amount_cents > cap:
            return REASON_LIMIT_MAX_AMOUNT
        if night is not None and is_night and night_spent + t.amount_cents > night:
            return REASON_LIMIT_NIGHT_PIX
        return None
