"""Kernel cost of rules, lists and limits on a 1000-row batch (`make bench`).

The batch: the latest 1000 transactions of the committed slice of published
data, with their own times and features (every third made a PIX). The rule set
(``sankofa.rules.examples``) is ten active and five shadow rules
of the kinds a fraud team writes: amounts against the customer's own history,
terminal risk, night, channel and type lists. ``judge`` is the whole per-batch
cost the scorer adds (all rules, list and limit checks, the decision and the
reasons); the compile kernel is paid once per rule version, never per batch.
Results are reported, never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sankofa.engine.transaction import Transaction, TransactionParser
from sankofa.evaluation.train import raw_features
from sankofa.rules.book import Entity, Limits, ListHit, build_ruleset, entity_key
from sankofa.rules.compile import compile_expression
from sankofa.rules.examples import SAMPLE_RULES as RULES
from sankofa.rules.fields import live_columns
from sankofa.rules.model import Rule
from sankofa.rules.verdict import LimitPolicy, RulesEngine
from sankofa.sim.data import load_raw

SLICE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "handbook-slice.csv.gz"
ROWS = 1000


@pytest.fixture(scope="module")
def batch() -> tuple[list[Transaction], np.ndarray]:
    return make_batch()


def make_batch() -> tuple[list[Transaction], np.ndarray]:
    """The benchmark's batch (a plain function, for profiling outside pytest): the
    slice's latest 1000 transactions with their own times and their offline features
    (the served vector, as the online store computes it)."""
    raw = load_raw(SLICE)
    x = raw_features(raw)
    first = x.shape[0] - ROWS  # the latest: their terminals have histories
    x = x[first:]
    parser = TransactionParser(hmac_key=b"benchmark-key-0123456789", max_metadata_bytes=2048)
    kinds = ("pix", "card", "card")
    txs = []
    for i in range(ROWS):
        j = first + i
        c = int(raw.amount_cents[j]) or 1
        when = np.datetime_as_string(np.datetime64(int(raw.tx_datetime[j]), "s"))
        txs.append(
            parser.parse(
                {
                    "transaction_id": f"b{i}",
                    "timestamp": when + "-03:00",
                    "amount": f"{c // 100}.{c % 100:02d}",
                    "customer_id": str(int(raw.customer_id[j])),
                    "terminal_id": str(int(raw.terminal_id[j])),
                    "type": kinds[i % 3],
                    "channel": "web" if i % 5 == 0 else "app",
                    **({"device_id": f"d{i % 97}"} if i % 2 else {}),
                }
            )
        )
    return txs, x


def _engine(rules: list[tuple[str, str, str, str]]) -> RulesEngine:
    from datetime import UTC, datetime

    stored = [
        Rule(rid, 1, action, 10 * k, mode, expr, "", datetime.now(UTC))
        for k, (rid, action, mode, expr) in enumerate(rules)
    ]
    engine = RulesEngine(
        book=None,  # type: ignore[arg-type]  # judge() is given the rule set
        entities=None,  # type: ignore[arg-type]
        limits=LimitPolicy(
            night_pix_limit_cents=100_000,
            night_start_hour=20,
            night_end_hour=6,
            timezone=ZoneInfo("America/Sao_Paulo"),
        ),
    )
    engine.ruleset = build_ruleset(1, stored)  # type: ignore[attr-defined]
    return engine


def _judge(engine: RulesEngine, txs: list[Transaction], x: np.ndarray, entities: dict) -> Any:
    n = len(txs)
    return engine.judge(
        txs,
        x,
        entities,
        ["approve"] * n,
        [["AMOUNT"] for _ in range(n)],
        ruleset=engine.ruleset,  # type: ignore[attr-defined]
    )


def test_rules_compile_one(benchmark: Any) -> None:
    benchmark(compile_expression, RULES[2][3])


def test_rules_one_rule_1000(benchmark: Any, batch: tuple[list[Transaction], np.ndarray]) -> None:
    """One rule's condition alone, its columns built from the batch."""
    txs, x = batch
    cond = compile_expression(RULES[0][3])
    benchmark(lambda: cond(live_columns(txs, x)))


def test_rules_judge_no_rules_1000(
    benchmark: Any, batch: tuple[list[Transaction], np.ndarray]
) -> None:
    """Nothing configured: the night PIX limit by default only."""
    txs, x = batch
    engine = _engine([])
    benchmark(_judge, engine, txs, x, {})


def test_rules_judge_15_rules_1000(
    benchmark: Any, batch: tuple[list[Transaction], np.ndarray]
) -> None:
    txs, x = batch
    engine = _engine(RULES)
    benchmark(_judge, engine, txs, x, {})


def test_rules_judge_15_rules_with_lists_1000(
    benchmark: Any, batch: tuple[list[Transaction], np.ndarray]
) -> None:
    """Plus 10 % of the batch's customers and terminals on a list, some with limits."""
    txs, x = batch
    engine = _engine(RULES)
    entities: dict[str, Entity] = {}
    for i, t in enumerate(txs[::10]):
        entities[entity_key("terminal", t.terminal_id)] = Entity(hot=ListHit("skimmer", None))
        entities[entity_key("customer", t.customer_ref)] = Entity(
            allow=ListHit("vip", 4e9) if i % 2 else None, limits=Limits(500_000, None)
        )
    benchmark(_judge, engine, txs, x, entities)
