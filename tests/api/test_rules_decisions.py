"""Rules, lists and limits deciding real transactions over HTTP (real PostgreSQL and
Redis): each action, the precedence, shadow rules, expiry, the night PIX limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import LiveServer, _with_state
from sankofa.api.app import create_app
from sankofa.settings import Settings
from tests_support import tx

PROBLEM = "application/problem+json"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api(settings: Settings, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, with list expiry judged by ``clock``."""
    app = create_app(settings, wall_clock=clock)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
            yield c


async def add_rule(
    c: httpx.AsyncClient,
    rule_id: str,
    action: str,
    expression: str,
    priority: int = 10,
    mode: str = "active",
) -> None:
    r = await c.post(
        "/v1/rules",
        json={
            "id": rule_id,
            "action": action,
            "priority": priority,
            "mode": mode,
            "expression": expression,
        },
    )
    assert r.status_code == 201, r.text


async def score(c: httpx.AsyncClient, i: int, **over: Any) -> dict[str, Any]:
    r = await c.post("/v1/transactions", json=tx(i, **over))
    assert r.status_code == 200, r.text
    d: dict[str, Any] = r.json()
    return d


async def stored(db: asyncpg.Connection, i: int) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT decision, reasons, rule_hits, shadow_rule_hits FROM transactions"
        " WHERE transaction_id = $1",
        f"tx-{i}",
    )
    assert row is not None
    return row


async def test_without_rules_the_score_decides(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    d = await score(api, 1)
    assert d["decision"] == "approve"
    assert not any(r.startswith(("RULE:", "HOT_", "ALLOW_", "LIMIT_")) for r in d["reasons"])
    row = await stored(db, 1)
    assert row["rule_hits"] is None and row["shadow_rule_hits"] is None


@pytest.mark.parametrize(
    "action, decision",
    [("decline", "decline"), ("review", "review"), ("step_up", "step_up"), ("allow", "approve")],
)
async def test_each_action(
    api: httpx.AsyncClient, db: asyncpg.Connection, action: str, decision: str
) -> None:
    await add_rule(api, "r1", action, 'type == "ted" and amount > 500')
    if action == "allow":
        # Something else would decline it: a lower-priority rule.
        await add_rule(api, "r2", "decline", 'type == "ted"', priority=20)
    hit = await score(api, 1, type="ted", amount="600.00")
    assert hit["decision"] == decision
    assert hit["reasons"][0] == "RULE:r1"
    miss = await score(api, 2, type="ted", amount="400.00")
    assert "RULE:r1" not in miss["reasons"]
    row = await stored(db, 1)
    assert row["decision"] == decision and row["rule_hits"][0] == "r1@1"
    # The stored decision comes back as it was on a replay.
    again = (await api.post("/v1/transactions", json=tx(1, type="ted", amount="600.00"))).json()
    assert again["replayed"] and again["decision"] == decision
    got = (await api.get("/v1/transactions/tx-1")).json()
    assert got["decision"]["decision"] == decision


async def test_rules_decide_by_priority_and_updates_take_effect_at_once(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await add_rule(api, "review-pix", "review", 'type == "pix"', priority=10)
    await add_rule(api, "decline-big", "decline", "amount > 100", priority=20)
    d = await score(api, 1, type="pix", amount="200.00")
    assert d["decision"] == "review" and d["reasons"][0] == "RULE:review-pix"
    assert (await stored(db, 1))["rule_hits"] == ["review-pix@1", "decline-big@1"]
    r = await api.put(
        "/v1/rules/decline-big",
        json={"action": "decline", "priority": 5, "mode": "active", "expression": "amount > 100"},
    )
    assert r.status_code == 200
    d = await score(api, 2, type="pix", amount="200.00")
    assert d["decision"] == "decline" and d["reasons"][0] == "RULE:decline-big"
    assert (await stored(db, 2))["rule_hits"] == ["decline-big@2", "review-pix@1"]
    # Equal priorities: the id decides, so the outcome never depends on load order.
    await api.put(
        "/v1/rules/review-pix",
        json={"action": "review", "priority": 5, "mode": "active", "expression": 'type == "pix"'},
    )
    d = await score(api, 3, type="pix", amount="200.00")
    assert d["reasons"][0] == "RULE:decline-big"
    assert (await api.delete("/v1/rules/decline-big")).status_code == 204
    d = await score(api, 4, type="pix", amount="200.00")
    assert d["decision"] == "review" and d["reasons"][0] == "RULE:review-pix"


async def test_shadow_rules_are_recorded_never_acted_on(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await add_rule(api, "shadow-decline", "decline", "amount > 10", mode="shadow", priority=0)
    d = await score(api, 1, amount="48.70")
    assert d["decision"] == "approve"
    assert not any(r.startswith("RULE:") for r in d["reasons"])
    row = await stored(db, 1)
    assert row["shadow_rule_hits"] == ["shadow-decline@1"] and row["rule_hits"] is None
    view = (await api.get("/v1/transactions/tx-1")).json()["decision"]
    assert view["shadow_rule_hits"] == ["shadow-decline@1"] and view["rule_hits"] == []
    assert (await stored(db, 1))["decision"] == "approve"


async def test_a_batch_is_judged_row_by_row(api: httpx.AsyncClient) -> None:
    await add_rule(api, "big", "decline", "amount >= 1000")
    await api.post("/v1/lists/hot/terminals", json={"value": "term-hot", "reason": "skimmer"})
    body = {
        "transactions": [
            tx(1, amount="999.99"),
            tx(2, amount="1000.00"),
            tx(3, terminal_id="term-hot"),
            tx(4, amount="5.00"),
        ]
    }
    r = await api.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    got = [(x["decision"], x["reasons"][0]) for x in r.json()["results"]]
    assert got[1] == ("decline", "RULE:big")
    assert got[2] == ("decline", "HOT_LIST_TERMINAL")
    # The others are the model's to decide.
    assert not got[0][1].startswith(("RULE:", "HOT_")) and not got[3][1].startswith(
        ("RULE:", "HOT_")
    )


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("customers", "cust-1", {}),
        ("terminals", "term-1", {}),
        ("devices", "dev-1", {"device_id": "dev-1"}),
        ("ips", "10.0.0.1", {"ip_address": "10.0.0.1"}),
    ],
)
async def test_hot_list_beats_an_allow_rule_and_the_allow_list(
    api: httpx.AsyncClient, path: str, value: str, field: dict[str, str]
) -> None:
    await add_rule(api, "allow-all", "allow", "amount > 0", priority=0)
    r = await api.post(f"/v1/lists/hot/{path}", json={"value": value, "reason": "fraud ring"})
    assert r.status_code == 201
    await api.post("/v1/lists/allow/customers", json={"value": "cust-1", "reason": "vip"})
    d = await score(api, 1, **field)
    kind = {"customers": "CUSTOMER", "terminals": "TERMINAL", "devices": "DEVICE", "ips": "IP"}[
        path
    ]
    assert d["decision"] == "decline" and d["reasons"][0] == f"HOT_LIST_{kind}"
    other = await score(api, 2, customer_id="cust-2", terminal_id="term-2")
    assert other["decision"] == "approve" and other["reasons"][0] == "RULE:allow-all"


async def test_allow_list_beats_a_decline_rule(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await add_rule(api, "no-pix", "decline", 'type == "pix"', priority=0)
    await api.post("/v1/lists/allow/customers", json={"value": "cust-1", "reason": "vip"})
    d = await score(api, 1, type="pix")
    assert d["decision"] == "approve" and d["reasons"][0] == "ALLOW_LIST_CUSTOMER"
    assert (await stored(db, 1))["rule_hits"] == ["no-pix@1"]  # recorded all the same
    d = await score(api, 2, type="pix", customer_id="cust-2")
    assert d["decision"] == "decline" and d["reasons"][0] == "RULE:no-pix"


async def test_list_entries_expire(api: httpx.AsyncClient, clock: Clock) -> None:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now + 3600))
    r = await api.post(
        "/v1/lists/hot/terminals",
        json={"value": "term-1", "reason": "for an hour", "expires_at": expires},
    )
    assert r.status_code == 201
    assert (await score(api, 1))["reasons"][0] == "HOT_LIST_TERMINAL"
    clock.now += 3599
    assert (await score(api, 2))["reasons"][0] == "HOT_LIST_TERMINAL"
    clock.now += 2
    d = await score(api, 3)
    assert d["decision"] == "approve" and "HOT_LIST_TERMINAL" not in d["reasons"]
    entry = (await api.get("/v1/lists/hot/terminals/term-1")).json()
    assert entry["active"] is False


@pytest.mark.parametrize(
    "timestamp, amount, limited",
    [
        ("2023-06-01T19:59:59-03:00", "1000.01", False),
        ("2023-06-01T20:00:00-03:00", "1000.01", True),
        ("2023-06-01T20:00:00-03:00", "1000.00", False),  # at the limit, not above it
        ("2023-06-02T05:59:59-03:00", "1000.01", True),
        ("2023-06-02T06:00:00-03:00", "1000.01", False),
        ("2023-06-01T23:00:00Z", "1000.01", True),  # 20:00 in Sao Paulo
        ("2023-06-01T22:59:59Z", "1000.01", False),  # 19:59:59 there
        ("2023-06-01T21:30:00+01:00", "5000.00", False),  # 17:30 there, though late here
        # Sao Paulo still had summer time in 2018: -02:00 from 4 November.
        ("2018-12-01T22:30:00Z", "1000.01", True),  # 20:30 -02:00
        ("2018-06-01T22:30:00Z", "1000.01", False),  # 19:30 -03:00
    ],
)
async def test_night_pix_limit_at_its_boundaries(
    api: httpx.AsyncClient, timestamp: str, amount: str, limited: bool
) -> None:
    d = await score(api, 1, type="pix", timestamp=timestamp, amount=amount)
    assert ("LIMIT_NIGHT_PIX" in d["reasons"]) is limited
    if limited:
        assert d["decision"] == "decline" and d["reasons"][0] == "LIMIT_NIGHT_PIX"
    card = await score(api, 2, type="card", timestamp=timestamp, amount=amount)
    assert "LIMIT_NIGHT_PIX" not in card["reasons"]


def night(day: int) -> str:
    """22:00 in Sao Paulo on June ``day`` 2023: a night of its own per check."""
    return f"2023-06-{day:02d}T22:00:00-03:00"


async def test_a_customers_own_limits(api: httpx.AsyncClient) -> None:
    await api.put("/v1/limits/customers/cust-1", json={"night_pix_limit": "5000.00"})
    at_limit = await score(api, 10, type="pix", timestamp=night(1), amount="5000.00")
    assert "LIMIT_NIGHT_PIX" not in at_limit["reasons"]
    over = await score(api, 2, type="pix", timestamp=night(2), amount="5000.01")
    assert over["reasons"][0] == "LIMIT_NIGHT_PIX"
    # Another customer keeps the default.
    assert (
        await score(api, 3, type="pix", timestamp=night(3), amount="1500.00", customer_id="cust-2")
    )["reasons"][0] == "LIMIT_NIGHT_PIX"
    # No night limit (a company), but a cap on every transaction.
    await api.put(
        "/v1/limits/customers/cust-1", json={"night_pix_limit": None, "max_amount": "20000"}
    )
    assert (
        "LIMIT_NIGHT_PIX"
        not in (await score(api, 4, type="pix", timestamp=night(4), amount="15000.00"))["reasons"]
    )
    d = await score(api, 5, type="card", amount="20000.01")
    assert d["decision"] == "decline" and d["reasons"][0] == "LIMIT_MAX_AMOUNT"
    # The limit is a regulation: the allow list does not lift it.
    await api.post("/v1/lists/allow/customers", json={"value": "cust-2", "reason": "vip"})
    assert (
        await score(api, 6, type="pix", timestamp=night(6), amount="1500.00", customer_id="cust-2")
    )["reasons"][0] == "LIMIT_NIGHT_PIX"
    await api.delete("/v1/limits/customers/cust-1")
    assert (await score(api, 7, type="pix", timestamp=night(7), amount="1500.00"))["reasons"][
        0
    ] == "LIMIT_NIGHT_PIX"


async def test_limits_and_lists_by_cpf_reach_transactions_sent_with_that_cpf(
    api: httpx.AsyncClient,
) -> None:
    """A bank sets limits by CPF, punctuated or not; transactions declare their
    customer_id a CPF and are normalised to its digits: both must meet."""
    cpf = {"customer_id": "529.982.247-25", "customer_id_type": "cpf"}
    r = await api.put(
        "/v1/limits/customers/529.982.247-25?customer_id_type=cpf",
        json={"night_pix_limit": "5000.00"},
    )
    assert r.status_code == 200, r.text
    ok = await score(api, 1, type="pix", timestamp=night(1), amount="2000.00", **cpf)
    assert "LIMIT_NIGHT_PIX" not in ok["reasons"]
    # The same customer by the digits alone: the same entry.
    got = await api.get("/v1/limits/customers/52998224725?customer_id_type=cpf")
    assert got.json()["default"] is False and got.json()["night_pix_limit"] == "5000.00"
    # A hot list entry by CPF declines that customer's transactions.
    r = await api.post(
        "/v1/lists/hot/customers?customer_id_type=cpf",
        json={"value": "52998224725", "reason": "account takeover"},
    )
    assert r.status_code == 201, r.text
    hot = await score(api, 2, amount="10.00", **cpf)
    assert hot["decision"] == "decline" and hot["reasons"][0] == "HOT_LIST_CUSTOMER"
    gone = await api.delete("/v1/lists/hot/customers/529.982.247-25?customer_id_type=cpf")
    assert gone.status_code == 204
    # Bad check digits, a type on a terminal, an unknown type: 422 problem+json.
    for method, path in (
        ("PUT", "/v1/limits/customers/529.982.247-26?customer_id_type=cpf"),
        ("GET", "/v1/lists/hot/terminals/t-1?customer_id_type=cpf"),
        ("GET", "/v1/limits/customers/x?customer_id_type=rg"),
    ):
        r = await api.request(method, path, json={"night_pix_limit": "1"})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, r.text)


async def test_the_night_pix_limit_is_a_total_per_night(
    client: httpx.AsyncClient, db: asyncpg.Connection, services: Any
) -> None:
    """BACEN keeps the night limit per period since 2023: R$ 1,000 in one PIX or in
    several. What was stored (and not declined) that night counts, across requests
    and within one batch, in event-time order; an allow rule does not lift it."""
    api = client
    await add_rule(api, "ok", "allow", "amount > 0")
    a = await score(api, 1, type="pix", timestamp="2023-06-01T21:00:00-03:00", amount="600.00")
    assert a["decision"] == "approve" and a["reasons"][0] == "RULE:ok"
    b = await score(api, 2, type="pix", timestamp="2023-06-01T23:00:00-03:00", amount="400.00")
    assert b["decision"] == "approve"  # 1,000.00: at the limit, not above it
    c = await score(api, 3, type="pix", timestamp="2023-06-02T05:59:00-03:00", amount="0.01")
    assert c["decision"] == "decline" and c["reasons"][0] == "LIMIT_NIGHT_PIX"
    # Declined, it took nothing; a card payment is not a PIX; day is not night.
    for i, kind, when in (
        (4, "card", "2023-06-02T05:59:30-03:00"),
        (5, "pix", "2023-06-02T06:00:00-03:00"),
    ):
        d = await score(api, i, type=kind, timestamp=when, amount="0.01")
        assert d["decision"] == "approve", (kind, when)
    # Another night starts again. In one batch sent latest first, the earlier PIX
    # takes the budget; one of another customer does not share it.
    body = {
        "transactions": [
            tx(6, type="pix", timestamp="2023-06-02T23:00:00-03:00", amount="700.00"),
            tx(7, type="pix", timestamp="2023-06-02T21:00:00-03:00", amount="700.00"),
            tx(
                8,
                type="pix",
                timestamp="2023-06-02T23:30:00-03:00",
                amount="700.00",
                customer_id="cust-2",
            ),
        ]
    }
    reads = services.rules.night.reads
    r = await api.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    assert [x["decision"] for x in r.json()["results"]] == ["decline", "approve", "approve"]
    # One read beside Redis, and one under the lock on the storing connection.
    assert services.rules.night.reads == reads + 2
    stored = await db.fetch(
        "SELECT transaction_id, decision FROM transactions ORDER BY transaction_id"
    )
    assert [(x["transaction_id"], x["decision"]) for x in stored] == [
        ("tx-1", "approve"),
        ("tx-2", "approve"),
        ("tx-3", "decline"),
        ("tx-4", "approve"),
        ("tx-5", "approve"),
        ("tx-6", "decline"),
        ("tx-7", "approve"),
        ("tx-8", "approve"),
    ]


async def test_concurrent_night_pix_of_one_customer_share_one_limit(
    live_server: LiveServer, db: asyncpg.Connection
) -> None:
    """Requests sent at once to ``sankofa serve`` are scored in batches in flight
    together, each of which would read the night's stored total before the
    other stored anything (without the lock this test fails in its first
    round). Under the lock taken before the write, exactly one R$ 600 PIX of
    six fits in R$ 1,000, every round."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30.0) as c:
        await add_rule(c, "ok", "allow", "amount > 0")  # the score does not decide
        rounds, each = 8, 6
        for r in range(rounds):
            answers = await asyncio.gather(
                *(
                    score(
                        c, i, type="pix", amount="600.00", customer_id=f"racer-{r}",
                        timestamp="2023-06-01T21:00:00-03:00",
                    )
                    for i in range(100 * r, 100 * r + each)
                )
            )  # fmt: skip
            decisions = sorted(a["decision"] for a in answers)
            assert decisions == ["approve"] + ["decline"] * (each - 1), (r, answers)
    approved = await db.fetchval(
        "SELECT count(*) FROM transactions WHERE decision = 'approve' AND tx_type = 'pix'"
    )
    assert approved == rounds


async def test_lists_and_limits_are_one_read_per_batch(
    client: httpx.AsyncClient, services: Any
) -> None:
    source = services.rules.entities
    loads = services.rules.book.loads
    before = source.reads
    body = {
        "transactions": [
            tx(i, customer_id=f"c{i}", terminal_id=f"t{i}", device_id=f"d{i}") for i in range(50)
        ]
    }
    r = await client.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200
    assert source.reads - before == services.engine.db_transactions == 1
    # The rules come from the snapshot: no read of them on the scoring path.
    assert services.rules.book.loads == loads
    # The same customers, terminals and devices again: the layered cache answers
    # (absences included), PostgreSQL is not asked.
    again = {
        "transactions": [
            tx(100 + i, customer_id=f"c{i}", terminal_id=f"t{i}", device_id=f"d{i}")
            for i in range(50)
        ]
    }
    r = await client.post("/v1/transactions/batch", json=again)
    assert r.status_code == 200
    assert source.reads - before == 1


async def test_a_list_change_reaches_another_instance_within_a_second(
    settings: Settings,
) -> None:
    """Two instances on one PostgreSQL and Redis: the second has the terminal's
    absence from the hot list cached (L1); a hot-list entry made through the
    first reaches its decisions within a second (the cache's invalidation channel)."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(settings)
            state = await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=_with_state(app, state))
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://sankofa.test")
                )
            )
        a, b = clients
        first = await score(b, 1, terminal_id="term-hot")
        assert "HOT_LIST_TERMINAL" not in first["reasons"]  # its absence is now cached in b
        r = await a.post("/v1/lists/hot/terminals", json={"value": "term-hot", "reason": "skimmer"})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 1.0
        i = 2
        while True:
            d = await score(b, i, terminal_id="term-hot")
            if d["reasons"][0] == "HOT_LIST_TERMINAL":
                break
            assert time.monotonic() < deadline, "b still serves the cached absence after 1 s"
            i += 1
            await asyncio.sleep(0.02)
        assert d["decision"] == "decline"


def _rule_series(text: str, rule_id: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("sankofa_rule_hits_total{") and f'rule="{rule_id}"' in line:
            labels, _, value = line.rpartition(" ")
            mode = labels.split('mode="', 1)[1].split('"', 1)[0]
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            out[(mode, outcome)] = float(value)
    return out


async def test_metrics_count_each_rules_matches_and_decisions(api: httpx.AsyncClient) -> None:
    """Per rule: every match, and the matches it decided itself (an earlier rule or
    the hot list can take a row it matched); shadow rules count matches only."""
    await add_rule(api, "first", "review", "amount > 100", priority=1)
    await add_rule(api, "second", "decline", "amount > 50", priority=2)
    await add_rule(api, "watch", "decline", "amount > 10", mode="shadow")
    await api.post("/v1/lists/hot/terminals", json={"value": "term-hot", "reason": "skimmer"})
    body = {
        "transactions": [
            tx(1, amount="200.00"),  # first and second match; first decides
            tx(2, amount="60.00"),  # second only
            tx(3, amount="70.00", terminal_id="term-hot"),  # second matches, hot list decides
            tx(4, amount="5.00"),  # nothing
        ]
    }
    r = await api.post("/v1/transactions/batch", json=body)
    assert r.status_code == 200, r.text
    # Sent again: stored already, not judged again, not counted again.
    assert (await api.post("/v1/transactions/batch", json=body)).status_code == 200
    text = (await api.get("/metrics")).text
    assert _rule_series(text, "first") == {("active", "matched"): 1, ("active", "decided"): 1}
    assert _rule_series(text, "second") == {("active", "matched"): 3, ("active", "decided"): 1}
    assert _rule_series(text, "watch") == {("shadow", "matched"): 3}
