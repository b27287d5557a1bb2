"""From a checked AST to one function over a whole batch: Columns -> boolean mask.

Compiled once per rule version (``compile_expression``); each call then costs
a handful of numpy operations on arrays of the batch's length, whatever the
batch size. Nothing here evaluates text: each AST node becomes a closure over
numpy ufuncs chosen from fixed tables.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sankofa.rules.expr import (
    Arith,
    BoolOp,
    Compare,
    In,
    Literal_,
    Name,
    Neg,
    Node,
    Not,
    names,
    parse,
)
from sankofa.rules.fields import FIELDS, Columns

Mask = npt.NDArray[np.bool_]
_Fn = Callable[[Columns], Any]

_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
}


def _build(node: Node) -> _Fn:
    if isinstance(node, Literal_):
        value = node.value
        return lambda cols: value
    if isinstance(node, Name):
        name = node.name
        return lambda cols: cols.get(name)
    if isinstance(node, Compare):
        cmp = _COMPARE[node.op]
        left, right = _build(node.left), _build(node.right)
        return lambda cols: cmp(left(cols), right(cols))
    if isinstance(node, In):
        return _build_in(node)
    if isinstance(node, BoolOp):
        parts = [_build(o) for o in node.operands]
        combine = np.logical_and if node.op == "and" else np.logical_or

        def boolop(cols: Columns) -> Any:
            acc = parts[0](cols)
            for p in parts[1:]:
                acc = combine(acc, p(cols))
            return acc

        return boolop
    if isinstance(node, Not):
        inner = _build(node.operand)
        return lambda cols: np.logical_not(inner(cols))
    if isinstance(node, Arith):
        op = _ARITH[node.op]
        left, right = _build(node.left), _build(node.right)
        return lambda cols: op(left(cols), right(cols))
    if isinstance(node, Neg):
        inner = _build(node.operand)
        return lambda cols: np.negative(inner(cols))
    raise TypeError(f"unknown node {type(node).__name__}")


#: Up to this many items, ``x in [...]`` is a chain of equalities (faster than a
#: sort-based ``np.isin`` on a batch); beyond, a set lookup or ``np.isin``.
_SMALL_IN: Final = 8


def _build_in(node: In) -> _Fn:
    operand = _build(node.operand)
    negated = node.negated
    if len(node.items) <= _SMALL_IN:
        items = list(node.items)

        def small(cols: Columns) -> Any:
            v = operand(cols)
            acc = v == items[0]
            for item in items[1:]:
                acc = acc | (v == item)
            return np.logical_not(acc) if negated else acc

        return small
    if node.operand.kind == "str":
        members = frozenset(node.items)

        def strings(cols: Columns) -> Any:
            v = operand(cols)
            if isinstance(v, str):  # a literal on the left
                return (v in members) != negated
            hit = np.fromiter(map(members.__contains__, v), np.bool_, len(v))
            return np.logical_not(hit) if negated else hit

        return strings
    array = np.asarray(node.items)
    return lambda cols: np.isin(operand(cols), array, invert=negated)


class CompiledExpression:
    """A rule's condition, ready to run on a batch."""

    __slots__ = ("_fn", "fields", "text")

    def __init__(self, text: str, node: Node, fields: frozenset[str]) -> None:
        self.text = text
        self.fields = fields
        self._fn = _build(node)

    def __call__(self, cols: Columns) -> Mask:
        # Division by zero gives inf or NaN, compared as numpy compares them:
        # a rule dividing by a zero count is simply false there, never an error.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = self._fn(cols)
        return np.broadcast_to(np.asarray(out, dtype=np.bool_), (cols.n,))


def compile_expression(text: str) -> CompiledExpression:
    """Parse, check and compile; raises ``ExpressionError`` pointing at the problem."""
    node = parse(text, FIELDS)

    return CompiledExpression(text, node, frozenset(names(node)))
