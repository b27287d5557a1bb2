"""Lists, limits and rules combined with the model's decision, for a whole batch.

Precedence, strongest first (the first that applies decides; the model's
score, risk level and reasons are always kept and follow the deciding reason):

1. **Hot list** (customer, terminal, device, IP; unexpired): ``decline``,
   ``HOT_LIST_<KIND>``. Before the allow list: a compromised terminal or a
   stolen device is declined even for a customer on the allow list.
2. **Limits** of the customer: the BACEN night-time PIX limit (a PIX above it
   between ``night_start_hour`` and ``night_end_hour`` in ``timezone``, the
   transaction's own instant converted with zoneinfo), and the customer's cap
   on any transaction: ``decline``, ``LIMIT_NIGHT_PIX`` / ``LIMIT_MAX_AMOUNT``.
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

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sankofa.engine.transaction import Transaction
from sankofa.rules.book import Entity, EntityLoader, Limits, RuleBook, RuleSet, entity_key
from sankofa.rules.fields import Columns, live_columns
from sankofa.rules.model import ACTION_DECISION, CompiledRule

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

    def __post_init__(self) -> None:
        if self.night_pix_limit_cents <= 0:
            raise ValueError("night_pix_limit_cents must be > 0")
        for name in ("night_start_hour", "night_end_hour"):
            if not 0 <= getattr(self, name) <= 23:
                raise ValueError(f"{name} must be 0..23")

    def is_night(self, when: datetime) -> bool:
        hour = when.astimezone(self.timezone).hour
        start, end = self.night_start_hour, self.night_end_hour
        if start <= end:
            return start <= hour < end
        return hour >= start or hour < end


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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.entities = entities
        self.limits = limits
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

    async def prepare(self, txs: Sequence[Transaction]) -> dict[str, Entity]:
        """One batched read of the lists and limits of the batch."""
        if not txs:
            return {}
        return await self.entities.load_many(batch_keys(txs))

    def judge(
        self,
        txs: Sequence[Transaction],
        x: npt.NDArray[np.float64],
        entities: dict[str, Entity],
        decision: list[str],
        reasons: list[list[str]],
        *,
        ruleset: RuleSet | None = None,
    ) -> Judged:
        """Change ``decision`` and ``reasons`` in place by the precedence above."""
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
        # Only rows something can change are visited: a rule hit, a PIX above the
        # default night limit, or an entry (list or own limits) on one of its keys.
        by_kind: dict[str, dict[str, Entity]] = {k: {} for k in _KINDS}
        for key, e in entities.items():
            kind, _, ref = key.partition(":")
            if kind in by_kind:
                by_kind[kind][ref] = e
        cust, term, dev, ips = (by_kind[k] for k in _KINDS)
        default = self.limits.night_pix_limit_cents
        hit_rows = (deciding >= 0).tolist()
        rows = [
            i
            for i, t in enumerate(txs)
            if hit_rows[i]
            or (t.type == "pix" and t.amount_cents > default)
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
        for i in rows:
            t = txs[i]
            hot: list[str] = []
            allow: list[str] = []
            limits: Limits | None = None
            if entities:
                found = (
                    cust.get(t.customer_ref),
                    term.get(t.terminal_id),
                    None if t.device_ref is None else dev.get(t.device_ref),
                    None if t.ip_ref is None else ips.get(t.ip_ref),
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
                continue
            over = self._over_limit(t, limits)
            if over is not None:
                decision[i] = "decline"
                reasons[i].insert(0, over)
                continue
            if allow:
                decision[i] = "approve"
                reasons[i][:0] = allow
                continue
            k = int(deciding[i])
            if k >= 0:
                rule = rs.active[k].rule
                decision[i] = ACTION_DECISION[rule.action]
                reasons[i].insert(0, RULE_REASON_PREFIX + rule.rule_id)
        return Judged(active_hits, shadow_hits)

    def _over_limit(self, t: Transaction, limits: Limits | None) -> str | None:
        lim = self.limits
        cap: int | None = None
        night: int | None = lim.night_pix_limit_cents
        if limits is not None:
            cap = limits.max_amount_cents
            night = limits.night_pix_limit_cents
        if cap is not None and t.amount_cents > cap:
            return REASON_LIMIT_MAX_AMOUNT
        if (
            night is not None
            and t.type == "pix"
            and t.amount_cents > night
            and lim.is_night(t.timestamp)
        ):
            return REASON_LIMIT_NIGHT_PIX
        return None
