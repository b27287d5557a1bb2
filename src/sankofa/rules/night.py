"""What a customer already moved by PIX in a night: the BACEN limit is per night.

Since January 2023 BACEN keeps PIX limits per period, not per transaction: an
individual's night limit (R$ 1,000 by default, 20:00-06:00 local time) may be
moved in one PIX or in several. So judging a night PIX needs the customer's
night so far: the sum of their stored PIX of that night that were not declined
(a review or a step-up may still go through, so they count; the limit is a
regulation and errs on the safe side). ``NightPixLedger.spent`` reads those
sums for a whole batch in one statement, served by the partial index of
migration 0006; ``RulesEngine.judge`` adds the batch's own earlier PIX, in
event-time order, so two PIX of one customer in one batch share one budget.

Two batches in flight at the same moment, each holding a night PIX of the same
customer (in one process or in two), would read the same stored sum and not see
each other: concurrent single requests hit this easily. So the write checks:
on the connection that stores the batch, ``NightPixLedger.lock_and_read`` takes
a session advisory lock per customer (in one order, so two batches cannot
deadlock) and reads the sums again; if another batch stored a night PIX of
these customers meanwhile, the batch is judged again before it is stored
(``ScoringEngine``). The locks are held until the COPY has committed and are
released when the connection goes back to the pool (asyncpg's reset runs
``pg_advisory_unlock_all``) or is closed after a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import asyncpg

from sankofa.engine.transaction import Transaction

if TYPE_CHECKING:
    from sankofa.rules.verdict import LimitPolicy

#: (customer_ref, the night's first instant in UTC).
NightKey = tuple[str, datetime]

_SPENT: Final = """
SELECT q.ref, q.lo, sum(t.amount_cents)::bigint AS cents
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS q(ref, lo, hi)
JOIN transactions t
  ON t.customer_ref = q.ref AND t.event_time >= q.lo AND t.event_time < q.hi
WHERE t.tx_type = 'pix' AND t.decision <> 'decline'
GROUP BY q.ref, q.lo
"""


def night_window(when: datetime, policy: LimitPolicy) -> tuple[datetime, datetime] | None:
    """The night (first instant, end) in UTC that ``when`` falls in, or None by day.

    Local wall-clock hours in ``policy.timezone`` (zoneinfo: the offsets in force
    on that date, DST included), so a night may last 9, 10 or 11 hours."""
    tz = policy.timezone
    local = when.astimezone(tz)
    start, end = policy.night_start_hour, policy.night_end_hour
    day = local.date()
    if start > end:  # across midnight, the usual case (20:00-06:00)
        if local.hour >= start:
            first = day
        elif local.hour < end:
            first = day - timedelta(days=1)
        else:
            return None
        last = first + timedelta(days=1)
    elif start <= local.hour < end:
        first = last = day
    else:
        return None
    lo = datetime(first.year, first.month, first.day, start, tzinfo=tz).astimezone(UTC)
    hi = datetime(last.year, last.month, last.day, end, tzinfo=tz).astimezone(UTC)
    return lo, hi


#: Since 1973 every UTC offset in the tz database is a whole quarter hour, and
#: so is every instant an offset changes (LMT and the like, e.g. Liberia's
#: -0:44:30 until 1972, came before): the night a time falls in is the same for
#: the whole UTC quarter hour it is in. Earlier times take the exact path.
_QUARTER_S: Final = 900
_QUARTERS_FROM_S: Final = datetime(1973, 1, 1, tzinfo=UTC).timestamp()
_MEMO_MAX: Final = 8192
_MISS: Final = object()


def night_window_of(t: Transaction, policy: LimitPolicy) -> tuple[datetime, datetime] | None:
    """``night_window`` of a transaction's instant, computed once per UTC quarter
    hour and policy (a batch's night PIX share a few quarters; the zoneinfo
    arithmetic is the cost), in ``policy.quarters``."""
    if t.event_time_s < _QUARTERS_FROM_S:
        return night_window(t.timestamp, policy)
    q = int(t.event_time_s // _QUARTER_S)
    memo = policy.quarters
    w = memo.get(q, _MISS)
    if w is _MISS:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        w = memo[q] = night_window(datetime.fromtimestamp(q * _QUARTER_S, UTC), policy)
    return w  # type: ignore[return-value]


def night_keys(txs: Sequence[Transaction], policy: LimitPolicy) -> dict[NightKey, datetime]:
    """Every (customer, night) of a batch's night PIX, with that night's end."""
    out: dict[NightKey, datetime] = {}
    for t in txs:
        if t.type == "pix":
            w = night_window_of(t, policy)
            if w is not None:
                out[(t.customer_ref, w[0])] = w[1]
    return out


#: The advisory lock space of the night totals (the two-key form: never the
#: same lock as a one-key advisory lock). "NP".
_LOCK_CLASS: Final = 0x4E50
_LOCK: Final = """
SELECT pg_advisory_lock($2::int, k)
FROM (SELECT DISTINCT hashtext(r) AS k FROM unnest($1::text[]) AS u(r) ORDER BY k) AS s
"""


class NightPixLedger:
    """The stored night PIX sums, from the primary (a replica may lag behind)."""

    def __init__(self, *, pool: asyncpg.Pool, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self._pool = pool
        self._timeout_s = timeout_s
        #: Reads of the sums, and locks taken before one (tests count them).
        self.reads = 0
        self.locks = 0

    async def spent(self, keys: dict[NightKey, datetime]) -> dict[NightKey, int]:
        """Cents moved so far in each (customer, night); absent means nothing."""
        if not keys:
            return {}
        async with asyncio.timeout(self._timeout_s), self._pool.acquire() as conn:
            return await self._read(conn, keys)

    async def lock_and_read(
        self, conn: asyncpg.Connection, keys: dict[NightKey, datetime]
    ) -> dict[NightKey, int]:
        """Lock these customers' nights on ``conn`` (until it is reset or closed),
        then read their sums: what a batch stored before the lock was granted is
        seen, and none can be stored for them until this connection lets go."""
        self.locks += 1
        await conn.execute(_LOCK, sorted({k[0] for k in keys}), _LOCK_CLASS)
        return await self._read(conn, keys)

    async def _read(
        self, conn: asyncpg.Connection, keys: dict[NightKey, datetime]
    ) -> dict[NightKey, int]:
        self.reads += 1
        refs = [k[0] for k in keys]
        los = [k[1] for k in keys]
        his = list(keys.values())
        rows = await conn.fetch(_SPENT, refs, los, his)
        return {(r["ref"], r["lo"]): int(r["cents"]) for r in rows}
