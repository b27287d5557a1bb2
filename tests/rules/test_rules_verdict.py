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
