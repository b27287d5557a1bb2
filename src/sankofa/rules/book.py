"""What the scorer reads about rules, lists and limits, and how.

* **Rules**: an in-process snapshot (``RuleSet``) of the rules in force, each
  compiled once per version. It is reloaded at once after a change made
  through this process, and every ``refresh_s`` otherwise (a poll of the
  latest revision, one tiny query off the hot path), so a change made through
  another instance is in force there within about ``refresh_s``.
* **Lists and limits**: ``EntitySource.load_many(keys)``, one PostgreSQL
  statement for a whole batch, keyed ``"{kind}:{ref}"`` (``customer:<hmac>``,
  ``terminal:<id>``, ``device:<hmac>``, ``ip:<hmac>``); keys without an entry
  are absent from the answer. Entries come back with their expiry, judged
  when used, so a cache in front of ``load_many`` can keep them as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from sankofa.rules import store
from sankofa.rules.compile import compile_expression
from sankofa.rules.expr import ExpressionError
from sankofa.rules.model import CompiledRule, Rule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListHit:
    reason: str
    expires_at_s: float | None

    def live(self, now_s: float) -> bool:
        return self.expires_at_s is None or self.expires_at_s > now_s


@dataclass(frozen=True, slots=True)
class Limits:
    #: None: no night PIX limit for this customer (e.g. a company).
    night_pix_limit_cents: int | None
    #: None: no cap on a single transaction.
    max_amount_cents: int | None


@dataclass(frozen=True, slots=True)
class Entity:
    """What the lists and limits say about one customer, terminal, device or IP."""

    hot: ListHit | None = None
    allow: ListHit | None = None
    limits: Limits | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for a cache layer that serialises)."""
        return {
            "hot": None if self.hot is None else [self.hot.reason, self.hot.expires_at_s],
            "allow": None if self.allow is None else [self.allow.reason, self.allow.expires_at_s],
            "limits": None
            if self.limits is None
            else [self.limits.night_pix_limit_cents, self.limits.max_amount_cents],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entity:
        hot, allow, limits = d.get("hot"), d.get("allow"), d.get("limits")
        return cls(
            hot=None if hot is None else ListHit(hot[0], hot[1]),
            allow=None if allow is None else ListHit(allow[0], allow[1]),
            limits=None if limits is None else Limits(limits[0], limits[1]),
        )


def entity_key(kind: str, ref: str) -> str:
    return f"{kind}:{ref}"


class EntityLoader(Protocol):
    """``load_many`` as a cache layer can wrap it."""

    async def load_many(self, keys: Sequence[str]) -> dict[str, Entity]: ...


class EntitySource:
    """Lists and limits from PostgreSQL, one statement per call."""

    def __init__(self, *, pool: asyncpg.Pool, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._pool = pool
        self._timeout_s = timeout_s
        self.reads = 0

    async def load_many(self, keys: Sequence[str]) -> dict[str, Entity]:
        if not isinstance(keys, list):
            keys = list(keys)
        if not keys:
            return {}
        self.reads += 1
        async with asyncio.timeout(self._timeout_s), self._pool.acquire() as conn:
            rows = await store.load_entities(conn, keys)
        parts: dict[str, dict[str, Any]] = {}
        for r in rows:
            p = parts.setdefault(r["key"], {})
            what = r["what"]
            if what == "limits":
                p["limits"] = Limits(r["night_pix_limit_cents"], r["max_amount_cents"])
            else:
                exp = r["expires_at"]
                p[what] = ListHit(r["reason"], None if exp is None else exp.timestamp())
        return {k: Entity(**v) for k, v in parts.items()}


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force, compiled: active ones in the order they decide."""

    revision: int = 0
    active: tuple[CompiledRule, ...] = ()
    shadow: tuple[CompiledRule, ...] = ()
    #: Rules stored but not compilable by this version of the code (logged).
    broken: tuple[str, ...] = field(default=())


def build_ruleset(revision: int, rules: Sequence[Rule]) -> RuleSet:
    compiled: list[CompiledRule] = []
    broken: list[str] = []
    for r in rules:
        try:
            compiled.append(CompiledRule(r, compile_expression(r.expression)))
        except ExpressionError as exc:
            # Stored by a version that knew a field this one does not: skip it
            # loudly rather than refuse to score.
            log.error("rule %s does not compile here (%s); it is not applied", r.tag, exc)
            broken.append(r.tag)
    compiled.sort(key=lambda c: (c.rule.priority, c.rule.rule_id))
    return RuleSet(
        revision=revision,
        active=tuple(c for c in compiled if c.rule.mode == "active"),
        shadow=tuple(c for c in compiled if c.rule.mode == "shadow"),
        broken=tuple(broken),
    )


class RuleBook:
    """The in-process snapshot of the rules, kept fresh (see the module docstring)."""

    def __init__(self, *, pool: asyncpg.Pool, timeout_s: float, refresh_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if not refresh_s > 0:
            raise ValueError("refresh_s must be > 0")
        self._pool = pool
        self._timeout_s = timeout_s
        self._refresh_s = refresh_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.current = RuleSet()
        self.loads = 0

    async def refresh(self, *, force: bool = False) -> RuleSet:
        """Reload when the stored revision moved (or when forced)."""
        async with self._lock:
            async with asyncio.timeout(self._timeout_s), self._pool.acquire() as conn:
                if not force and await store.revision(conn) == self.current.revision:
                    return self.current
                rev, rules = await store.current_rules(conn)
            self.current = build_ruleset(rev, rules)
            self.loads += 1
            log.info(
                "rules revision %d: %d active, %d shadow",
                rev,
                len(self.current.active),
                len(self.current.shadow),
            )
            return self.current

    async def start(self) -> None:
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._poll(), name="rules-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the database away: keep the snapshot, retry
                log.warning(
                    "rules refresh failed (%s); keeping revision %d",
                    type(exc).__name__,
                    self.current.revision,
                )
