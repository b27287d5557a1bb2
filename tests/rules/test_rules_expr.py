"""The rule language: what parses, what it means over a batch, and how it refuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sankofa.rules.compile import compile_expression
from sankofa.rules.expr import MAX_DEPTH, MAX_EXPRESSION_CHARS, MAX_LIST_ITEMS, ExpressionError
from sankofa.rules.fields import FIELDS, Columns

ROWS: list[dict[str, Any]] = [
    {
        "type": "pix",
        "amount": 1500.0,
        "is_night": True,
        "channel": "app",
        "local_hour": 23.0,
        "customer_tx_count_1d": 4.0,
        "customer_avg_amount_30d": 100.0,
    },
    {
        "type": "card",
        "amount": 20.0,
        "is_night": False,
        "channel": "",
        "local_hour": 10.0,
        "customer_tx_count_1d": 1.0,
        "customer_avg_amount_30d": 0.0,
    },
    {
        "type": "pix",
        "amount": 999.99,
        "is_night": False,
        "channel": "web",
        "local_hour": 12.0,
        "customer_tx_count_1d": 0.0,
        "customer_avg_amount_30d": 50.0,
    },
    {
        "type": "ted",
        "amount": 1000.0,
        "is_night": True,
        "channel": "web",
        "local_hour": 2.0,
        "customer_tx_count_1d": 2.0,
        "customer_avg_amount_30d": float("nan"),
    },
]


def columns(rows: list[dict[str, Any]] = ROWS) -> Columns:
    def col(name: str) -> Any:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            return lambda: np.array(values, dtype=object)
        if isinstance(values[0], bool):
            return lambda: np.array(values, dtype=np.bool_)
        return lambda: np.array(values, dtype=np.float64)

    return Columns(len(rows), {name: col(name) for name in rows[0]})


@pytest.mark.parametrize(
    "text, expected",
    [
        ('type == "pix" and amount > 1000 and is_night', [True, False, False, False]),
        ("type == 'pix'", [True, False, True, False]),
        ('type != "pix"', [False, True, False, True]),
        ("amount >= 1000", [True, False, False, True]),
        ("amount <= 999.99", [False, True, True, False]),
        ("amount < 20 or amount == 1000", [False, False, False, True]),
        ("not is_night", [False, True, True, False]),
        ("not not is_night", [True, False, False, True]),
        ('channel in ["web", "app"]', [True, False, True, True]),
        ('channel not in ["web"]', [True, True, False, False]),
        ('type in ["ted"] or (is_night and amount > 1000)', [True, False, False, True]),
        ("is_night == true", [True, False, False, True]),
        ("local_hour >= 22 or local_hour < 6", [True, False, False, True]),
        ("amount > 3 * customer_avg_amount_30d", [True, True, True, False]),  # NaN: false
        ("amount / customer_avg_amount_30d > 15", [False, True, True, False]),  # x/0 = inf
        ("amount - 1000 > -0.5", [True, False, True, True]),
        ("-amount < -1000", [True, False, False, False]),
        ("customer_tx_count_1d in [0, 1, 2]", [False, True, True, True]),
        (
            "customer_tx_count_1d not in [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]",
            [True, False, False, False],
        ),
        ('channel in ["a", "b", "c", "d", "e", "f", "g", "h", "web"]', [False, False, True, True]),
        ('channel not in ["a", "b", "c", "d", "e", "f", "g", "h", ""]', [True, False, True, True]),
        ('"pix" in ["card", "pix"]', [True, True, True, True]),
        ('"pix" not in ["card", "pix"]', [False, False, False, False]),
        ('"x" not in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]', [True, True, True, True]),
        ("true", [True, True, True, True]),
        (
            "false or amount > 1e3" if False else "false or amount > 1000",
            [True, False, False, False],
        ),
        ("(((amount > 10)))", [True, True, True, True]),
        ('"pix" == type', [True, False, True, False]),
        ("amount > 1 and amount > 2 and amount > 30 and amount > 40", [True, False, True, True]),
    ],
)
def test_evaluates_over_the_whole_batch(text: str, expected: list[bool]) -> None:
    mask = compile_expression(text)(columns())
    assert mask.dtype == np.bool_ and mask.shape == (len(ROWS),)
    assert mask.tolist() == expected


def test_reads_only_the_fields_it_names() -> None:
    c = compile_expression('type == "pix" and (amount > 1 or is_night)')
    assert c.fields == {"type", "amount", "is_night"}
    # A column never named is never built.
    built: list[str] = []
    cols = Columns(1, {n: (lambda n=n: built.append(n) or np.array([1.0])) for n in FIELDS})
    compile_expression("amount > 0")(cols)
    assert built == ["amount"]


@pytest.mark.parametrize(
    "text, position, message, name",
    [
        ("amout > 1", 0, "unknown field 'amout'; did you mean 'amount'?", "amout"),
        ('type == "pix" and colour == "red"', 18, "unknown field 'colour'", "colour"),
        ("amount > ", 9, "expected a value, found the end of the expression", None),
        ("amount = 1", 7, "unexpected '='; use '==' to compare", None),
        ("amount > 1 amount", 11, "unexpected 'amount'", None),
        ('type == "pixx"', 8, "type is one of 'card', 'pix', 'ted', 'boleto'", None),
        ('type in ["pix", "wire"]', 16, "type is one of", None),
        ('amount == "10"', 7, "'==' compares a number with a string", None),
        ("amount > 1 and 2", 15, "'and' needs a boolean, not a number", None),
        ("not amount", 4, "'not' needs a boolean, not a number", None),
        ('type > "a"', 0, "'>' needs a number, not a string", None),
        ("amount", 0, "a rule must be a condition (a boolean), not a number", None),
        ('"unterminated', 0, "unterminated string", None),
        ("amount > 1 ; drop", 11, "unexpected character ';'", None),
        ("amount in []", 7, "an 'in' list must not be empty", None),
        ("amount in [1, amount]", 14, "an 'in' list holds literals only", None),
        ("(amount > 1", 11, "expected ')'", None),
        ('__import__("os")', 0, "unknown field '__import__'", "__import__"),
        ("amount.real > 1", 6, "unexpected character '.'", None),
        ("", 0, "expression is empty", None),
        ("amount > 10abc", 11, "a number must not run into a name", None),
        ('"a\\n" == channel', 2, "unknown escape", None),
    ],
)
def test_refuses_pointing_at_the_problem(
    text: str, position: int, message: str, name: str | None
) -> None:
    with pytest.raises(ExpressionError) as err:
        compile_expression(text)
    assert err.value.position == position
    assert err.value.message.startswith(message)
    assert err.value.name == name


def test_bounds_length_depth_and_lists() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression("amount > 1 or " * 200 + "true")
    assert len("amount > 1 or " * 200) > MAX_EXPRESSION_CHARS
    deep = "(" * MAX_DEPTH + "amount > 1" + ")" * MAX_DEPTH
    with pytest.raises(ExpressionError, match="nests deeper"):
        compile_expression(deep)
    ok = "(" * (MAX_DEPTH - 1) + "amount > 1" + ")" * (MAX_DEPTH - 1)
    compile_expression(ok)
    with pytest.raises(ExpressionError, match="nests deeper"):
        compile_expression("not " * (MAX_DEPTH + 1) + "is_night")
    with pytest.raises(ExpressionError, match="at most"):
        compile_expression("amount in [" + ", ".join(["1"] * (MAX_LIST_ITEMS + 1)) + "]")
    with pytest.raises(ExpressionError, match="tokens"):
        full = "amount in [" + ",".join(["1"] * MAX_LIST_ITEMS) + "]"
        compile_expression(full)
        compile_expression(full + " or " + full)
    with pytest.raises(ExpressionError, match="nests deeper"):
        compile_expression("amount" + " + 1" * MAX_DEPTH + " > 0")
    compile_expression("amount" + " + 1" * (MAX_DEPTH - 2) + " > 0")


def test_strings_with_escapes_and_quotes() -> None:
    cols = Columns(2, {"channel": lambda: np.array(['a"b', "c'd"])})
    assert compile_expression('channel == "a\\"b"')(cols).tolist() == [True, False]
    assert compile_expression("channel == 'c\\'d'")(cols).tolist() == [False, True]


def test_every_feature_field_is_known() -> None:
    for name in (
        "is_night",
        "is_weekend",
        "customer_tx_count_1d",
        "customer_avg_amount_30d",
        "terminal_risk_7d",
        "terminal_tx_count_30d",
        "terminal_known_fraud_streak",
        "terminal_last_legit_age",
        "local_hour",
        "has_device",
        "has_ip",
    ):
        assert name in FIELDS
