"""The precedence and the snapshot, without servers: judge() on built batches."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sankofa.engine.feature_names import N_SERVED_FEATURES
from sankofa.engine.transaction import Transaction, TransactionParser
from sankofa.rules.book import Entity, Limits, ListHit, build_ruleset, entity_key
from sankofa.rules.model import Rule
from sankofa.rules.night import night_window, night_window_of
from sankofa.rules.verdict import LimitPolicy, RulesEngine, batch_keys

PARSER = TransactionParser(hmac_key=b"unit-test-key-0123456789", max_metadata_bytes=2048)
POLICY = LimitPolicy(
    night_pix_limit_cents=100_000,
    night_start_hour=20,
    night_end_hour=6,
    timezone=ZoneInfo("America/Sao_Paulo"),
)


def make_tx(i: int, **over: object) -> Transaction:
    body: dict[str, object] = {
        "transaction_id": f"t{i}",
        "timestamp": "2023-06-01T12:00:00-03:00",
        "amount": "100.00",
        "customer_id": f"c{i}",
        "terminal_id": f"term{i}",
        "type": "card",
    }
    body.update(over)
    return PARSER.parse(body)


def rule(
    rule_id: str,
    action: str,
    expression: str,
    priority: int = 10,
    mode: str = "active",
    version: int = 1,
) -> Rule:
    return Rule(rule_id, version, action, priority, mode, expression, "", datetime.now(UTC))


def judge(
    txs: list[Transaction],
    rules: list[Rule],
    entities: dict[str, Entity] | None = None,
    now: float = 1_000.0,
) -> tuple[list[str], list[list[str]], object]:
    engine = RulesEngine(
        book=None,
        entities=None,
        limits=POLICY,  # type: ignore[arg-type]
        wall_clock=lambda: now,
    )
    n = len(txs)
    decision = ["approve"] * n
    reasons = [["AMOUNT"] for _ in range(n)]
    x = np.zeros((n, N_SERVED_FEATURES))
    judged = engine.judge(
        txs, x, entities or {}, decision, reasons, ruleset=build_ruleset(1, rules)
    )
    return decision, reasons, judged


def test_rules_in_priority_order_then_id() -> None:
    txs = [make_tx(0, amount="600.00"), make_tx(1, amount="50.00")]
    rules = [
        rule("b", "decline", "amount > 500", 5),
        rule("a", "review", "amount > 10", 5),
        rule("z", "step_up", "amount > 0", 1, mode="shadow"),
    ]
    decision, reasons, judged = judge(txs, rules)
    assert decision == ["review", "review"]
    assert reasons[0][:2] == ["RULE:a", "AMOUNT"]
    assert judged.rule_hits == [["a@1", "b@1"], ["a@1"]]  # type: ignore[attr-defined]
    assert judged.shadow_hits == [["z@1"], ["z@1"]]  # type: ignore[attr-defined]


def test_expiry_is_exclusive_at_the_instant() -> None:
    t = make_tx(0)
    key = entity_key("terminal", t.terminal_id)
    entities = {key: Entity(hot=ListHit("skimmer", 2_000.0))}
    assert judge([t], [], entities, now=1_999.999)[0] == ["decline"]
    assert judge([t], [], entities, now=2_000.0)[0] == ["approve"]


def test_every_key_of_a_batch_once() -> None:
    txs = [make_tx(0, device_id="d", ip_address="10.0.0.1"), make_tx(0, transaction_id="t9")]
    keys = batch_keys(txs)
    assert len(keys) == len(set(keys)) == 4
    assert {k.split(":")[0] for k in keys} == {"customer", "terminal", "device", "ip"}


def test_customer_limits_replace_the_default() -> None:
    night = "2023-06-01T21:00:00-03:00"
    t = make_tx(0, type="pix", amount="1500.00", timestamp=night)
    assert judge([t], [])[1][0][0] == "LIMIT_NIGHT_PIX"
    key = entity_key("customer", t.customer_ref)
    assert judge([t], [], {key: Entity(limits=Limits(None, None))})[0] == ["approve"]
    assert judge([t], [], {key: Entity(limits=Limits(200_000, None))})[0] == ["approve"]
    assert judge([t], [], {key: Entity(limits=Limits(None, 100_000))})[1][0][0] == (
        "LIMIT_MAX_AMOUNT"
    )


def test_entity_round_trips_through_plain_values() -> None:
    e = Entity(hot=ListHit("x", 12.5), allow=None, limits=Limits(100, None))
    assert Entity.from_dict(e.as_dict()) == e


def test_a_stored_rule_this_version_cannot_compile_is_skipped() -> None:
    rs = build_ruleset(
        3, [rule("old", "decline", "retired_field > 1"), rule("ok", "review", "amount > 1")]
    )
    assert [c.rule.rule_id for c in rs.active] == ["ok"] and rs.broken == ("old@1",)


@pytest.mark.parametrize(
    "hours, night",
    [
        ((20, 6), [True, True, False, False]),
        ((22, 6), [False, True, False, False]),
        ((0, 6), [False, True, False, False]),
    ],
)
def test_night_window(hours: tuple[int, int], night: list[bool]) -> None:
    p = LimitPolicy(
        night_pix_limit_cents=1,
        night_start_hour=hours[0],
        night_end_hour=hours[1],
        timezone=ZoneInfo("America/Sao_Paulo"),
    )
    times = [
        "2023-06-01T21:00:00-03:00",
        "2023-06-02T05:59:59-03:00",
        "2023-06-02T06:00:00-03:00",
        "2023-06-01T19:59:59-03:00",
    ]
    assert [p.is_night(make_tx(0, timestamp=ts).timestamp) for ts in times] == night


@pytest.mark.parametrize(
    "when, window",
    [
        # After 20:00: that evening to the next morning.
        ("2023-06-01T21:30:00-03:00", ("2023-06-01T23:00:00Z", "2023-06-02T09:00:00Z")),
        # Before 06:00: the night that began the evening before.
        ("2023-06-02T05:59:59-03:00", ("2023-06-01T23:00:00Z", "2023-06-02T09:00:00Z")),
        ("2023-06-02T06:00:00-03:00", None),
        ("2023-06-01T19:59:59-03:00", None),
        # Given in UTC: the local hour decides.
        ("2023-06-02T08:30:00Z", ("2023-06-01T23:00:00Z", "2023-06-02T09:00:00Z")),
        # Sao Paulo's summer time began at 00:00 on 4 November 2018: that night
        # lasted 9 hours (20:00 -03:00 to 06:00 -02:00).
        ("2018-11-04T02:00:00-02:00", ("2018-11-03T23:00:00Z", "2018-11-04T08:00:00Z")),
        # ... and ended at 00:00 on 17 February 2019: an 11-hour night.
        ("2019-02-17T03:00:00-03:00", ("2019-02-16T22:00:00Z", "2019-02-17T09:00:00Z")),
    ],
)
def test_the_night_a_transaction_falls_in(when: str, window: tuple[str, str] | None) -> None:
    got = night_window(datetime.fromisoformat(when), POLICY)
    if window is None:
        assert got is None
    else:
        assert got == tuple(datetime.fromisoformat(w) for w in window)


@pytest.mark.parametrize(
    "zone, hours",
    [
        ("America/Sao_Paulo", (20, 6)),  # summer time until 2019
        ("America/St_Johns", (20, 6)),  # -03:30, and summer time
        ("Asia/Kathmandu", (22, 6)),  # +05:45
        ("Australia/Lord_Howe", (20, 6)),  # a summer time of 30 minutes
        ("Asia/Kolkata", (0, 5)),  # +05:30, a night within one day
    ],
)
def test_the_night_per_quarter_hour_is_the_exact_night(zone: str, hours: tuple[int, int]) -> None:
    """``night_window_of`` computes a night once per UTC quarter hour: it must agree
    with the exact ``night_window`` at every instant, across changes of offset,
    in zones whose offsets are not whole hours, and before 1973 (the exact path;
    the parser refuses times before 1970)."""
    policy = LimitPolicy(
        night_pix_limit_cents=1,
        night_start_hour=hours[0],
        night_end_hour=hours[1],
        timezone=ZoneInfo(zone),
    )
    rng = np.random.default_rng(7)
    lo = datetime(2018, 1, 1, tzinfo=UTC).timestamp()
    hi = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    # Random instants over seven years, and every 7 min 13 s across each change
    # of offset in them (found by stepping an hour at a time), and a few in 1971.
    instants = list(rng.uniform(lo, hi, 400).round())
    step = lo
    while step < hi:
        a = datetime.fromtimestamp(step, UTC).astimezone(policy.timezone).utcoffset()
        b = datetime.fromtimestamp(step + 3600, UTC).astimezone(policy.timezone).utcoffset()
        if a != b:
            instants += [step - 3600 + k * 433 for k in range(20)]
        step += 3600
    instants += [datetime(1971, 3, 1, h, 59, tzinfo=UTC).timestamp() for h in range(24)]
    for k, when in enumerate(instants):
        ts = datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")
        t = make_tx(k, timestamp=ts)
        assert night_window_of(t, policy) == night_window(t.timestamp, policy), ts
    assert policy.quarters  # the memo was used


def test_the_night_limit_is_a_total_per_customer_and_night() -> None:
    """R$ 1,000 a night: the stored PIX of the night count, then the batch's own in
    event-time order (not the order sent); a declined PIX takes nothing; a card
    payment is not a PIX; another night or another customer starts again."""
    n1, n2 = "2023-06-01T21:00:00-03:00", "2023-06-01T23:00:00-03:00"
    txs = [
        make_tx(1, customer_id="a", type="pix", amount="500.00", timestamp=n2),
        make_tx(2, customer_id="a", type="pix", amount="600.00", timestamp=n1),
        make_tx(3, customer_id="a", type="pix", amount="5000.00", timestamp=n1),  # declined
        make_tx(4, customer_id="a", type="card", amount="900.00", timestamp=n1),
        make_tx(
            5, customer_id="a", type="pix", amount="400.00", timestamp="2023-06-02T05:00:00-03:00"
        ),
        make_tx(
            6, customer_id="a", type="pix", amount="999.00", timestamp="2023-06-02T21:00:00-03:00"
        ),
        make_tx(7, customer_id="b", type="pix", amount="1000.00", timestamp=n2),
    ]
    decision, reasons, _ = judge(txs, [])
    # 600 (21:00) then the 5,000 refused, then 400 at 05:00 reaches 1,000 exactly;
    # the 500 at 23:00 would have taken it to 1,100.
    assert decision == ["decline", "approve", "decline", "approve", "approve", "approve", "approve"]
    assert reasons[0][0] == reasons[2][0] == "LIMIT_NIGHT_PIX"
    # With R$ 200 stored for customer a that night, the 400 at 05:00 is over too.
    first = night_window(datetime.fromisoformat(n1), POLICY)
    assert first is not None
    engine = RulesEngine(book=None, entities=None, limits=POLICY)  # type: ignore[arg-type]
    d = ["approve"] * len(txs)
    r = [["AMOUNT"] for _ in txs]
    engine.judge(
        txs,
        np.zeros((len(txs), N_SERVED_FEATURES)),
        {},
        d,
        r,
        ruleset=build_ruleset(1, []),
        night_spent={(txs[0].customer_ref, first[0]): 20_000},
    )
    assert d == ["decline", "approve", "decline", "approve", "decline", "approve", "approve"]
