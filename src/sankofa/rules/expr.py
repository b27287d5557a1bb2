"""The rule language: a tokenizer and a recursive-descent parser to a typed AST.

User text is never handed to ``eval``, ``exec`` or ``compile``: it is read
character by character here, checked against the field catalogue
(``rules.fields``), and turned into numpy operations by ``rules.compile``.

Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                       | "not"? "in" "[" literal ("," literal)* ","? "]")?
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := NUMBER | STRING | "true" | "false" | NAME | "(" expr ")"

Numbers are decimal (``1000``, ``0.5``); strings are in double or single
quotes with ``\\"``, ``\\'`` and ``\\\\`` as the only escapes. Types are checked
before anything runs: ``and`` / ``or`` / ``not`` take booleans, arithmetic and
``<`` ``<=`` ``>`` ``>=`` take numbers, ``==`` / ``!=`` / ``in`` compare like
with like, and the whole expression must be a boolean. Every error names its
position (0-based offset into the text) and, for an unknown name, the name.

Bounds (``MAX_*``) keep a hostile expression from costing more than a
well-meant one: its length, its token count, its nesting depth and the items
of an ``in`` list.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

#: Longest expression accepted, in characters.
MAX_EXPRESSION_CHARS: Final = 2000
#: Most tokens in one expression.
MAX_TOKENS: Final = 600
#: Deepest nesting of the AST (parentheses, operators, ``not``).
MAX_DEPTH: Final = 32
#: Most items in one ``in [...]`` list.
MAX_LIST_ITEMS: Final = 256

Kind = Literal["num", "str", "bool"]
KIND_WORDS: Final[dict[str, str]] = {"num": "a number", "str": "a string", "bool": "a boolean"}


class ExpressionError(Exception):
    """The expression is wrong: ``message`` says why, ``position`` where (0-based
    character offset), ``name`` the unknown field when that is the problem."""

    def __init__(self, message: str, position: int, name: str | None = None) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position
        self.name = name


# -- tokens -------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>[0-9]+(?:\.[0-9]+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\+|-|\*|/)
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
_ESCAPES: Final = {'"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num | str | name | kw | op | end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression is longer than {MAX_EXPRESSION_CHARS} characters", MAX_EXPRESSION_CHARS
        )
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "\"'":
                raise ExpressionError("unterminated string", pos)
            if ch == "=":
                raise ExpressionError("unexpected '='; use '==' to compare", pos)
            if ch == "!":
                raise ExpressionError("unexpected '!'; use '!=' or 'not'", pos)
            shown = ch if ch.isprintable() else repr(ch)
            raise ExpressionError(f"unexpected character {shown!r}", pos)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            word = m.group()
            if kind == "name" and word in _KEYWORDS:
                kind = "kw"
            elif kind == "num" and m.end() < len(text) and text[m.end()].isalpha():
                raise ExpressionError("a number must not run into a name", m.end())
            tokens.append(Token(kind, word, pos))
            if len(tokens) > MAX_TOKENS:
                raise ExpressionError(f"expression has more than {MAX_TOKENS} tokens", pos)
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(tok: Token) -> str:
    body = tok.text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]  # the token pattern guarantees a character follows
            if nxt not in _ESCAPES:
                raise ExpressionError(
                    f"unknown escape '\\{nxt}' (only \\\" \\' \\\\)", tok.pos + 1 + i
                )
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# -- the AST --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    pos: int
    kind: Kind = field(compare=False)


@dataclass(frozen=True, slots=True)
class Literal_(Node):
    value: float | str | bool


@dataclass(frozen=True, slots=True)
class Name(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class In(Node):
    operand: Node
    items: tuple[float | str | bool, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    op: str  # and | or
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True, slots=True)
class Arith(Node):
    op: str  # + - * /
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Neg(Node):
    operand: Node


def children(node: Node) -> Iterator[Node]:
    if isinstance(node, Compare | Arith):
        yield node.left
        yield node.right
    elif isinstance(node, In | Not | Neg):
        yield node.operand
    elif isinstance(node, BoolOp):
        yield from node.operands


def names(node: Node) -> set[str]:
    """The field names an expression reads."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name):
            out.add(n.name)
        stack.extend(children(n))
    return out


# -- the parser -----------------------------------------------------------------

#: A field's kind and, for fields with a closed set of values, those values.
FieldSpec = tuple[Kind, tuple[str, ...] | None]

_COMPARE: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Parser:
    def __init__(self, tokens: list[Token], fields: Mapping[str, FieldSpec]) -> None:
        self.tokens = tokens
        self.i = 0
        self.fields = fields
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def expect(self, kind: str, text: str, what: str) -> Token:
        if not self.at(kind, text):
            raise ExpressionError(f"expected {what}, found {_describe(self.tok)}", self.tok.pos)
        return self.take()

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels", pos)

    def leave(self) -> None:
        self.depth -= 1

    # Grammar, one method per rule.

    def expr(self) -> Node:
        self.enter(self.tok.pos)
        try:
            return self.boolop("or", self.and_)
        finally:
            self.leave()

    def and_(self) -> Node:
        return self.boolop("and", self.not_)

    def boolop(self, op: str, parse: Callable[[], Node]) -> Node:
        first = parse()
        if not self.at("kw", op):
            return first
        items = [first]
        while self.at("kw", op):
            op_tok = self.take()
            items.append(parse())
            if len(items) == 2:
                _need(items[0], "bool", f"'{op}'", op_tok.pos)
            _need(items[-1], "bool", f"'{op}'", op_tok.pos)
        return BoolOp(first.pos, "bool", op, tuple(items))

    def not_(self) -> Node:
        if self.at("kw", "not"):
            t = self.take()
            self.enter(t.pos)
            try:
                operand = self.not_()
            finally:
                self.leave()
            _need(operand, "bool", "'not'", t.pos)
            return Not(t.pos, "bool", operand)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.text in _COMPARE:
            self.take()
            right = self.sum()
            if t.text in ("==", "!="):
                if left.kind != right.kind:
                    raise ExpressionError(
                        f"'{t.text}' compares {KIND_WORDS[left.kind]} with"
                        f" {KIND_WORDS[right.kind]}",
                        t.pos,
                    )
                self.check_values(left, right)
                self.check_values(right, left)
            else:
                _need(left, "num", f"'{t.text}'", t.pos)
                _need(right, "num", f"'{t.text}'", t.pos)
            return Compare(left.pos, "bool", t.text, left, right)
        negated = False
        if self.at("kw", "not") and self.tokens[self.i + 1].kind == "kw":
            if self.tokens[self.i + 1].text == "in":
                self.take()
                negated = True
        if self.at("kw", "in"):
            in_tok = self.take()
            items = self.literal_list(left.kind, in_tok.pos)
            if isinstance(left, Name):
                for value, pos in items:
                    self.check_value(left, value, pos)
            return In(left.pos, "bool", left, tuple(v for v, _ in items), negated)
        if negated:
            raise ExpressionError("expected 'in' after 'not'", self.tok.pos)
        return left

    def literal_list(self, kind: Kind, pos: int) -> list[tuple[float | str | bool, int]]:
        self.expect("op", "[", "'[' after 'in'")
        items: list[tuple[float | str | bool, int]] = []
        while not self.at("op", "]"):
            t = self.tok
            lit = self.literal()
            if lit is None:
                raise ExpressionError(
                    f"an 'in' list holds literals only, found {_describe(t)}", t.pos
                )
            if lit.kind != kind:
                raise ExpressionError(
                    f"'in' compares {KIND_WORDS[kind]} with {KIND_WORDS[lit.kind]}", t.pos
                )
            items.append((lit.value, t.pos))
            if len(items) > MAX_LIST_ITEMS:
                raise ExpressionError(f"an 'in' list holds at most {MAX_LIST_ITEMS} items", t.pos)
            if not self.at("op", "]"):
                self.expect("op", ",", "',' or ']'")
        self.take()
        if not items:
            raise ExpressionError("an 'in' list must not be empty", pos)
        return items

    def literal(self) -> Literal_ | None:
        t = self.tok
        sign = 1.0
        if t.kind == "op" and t.text == "-" and self.tokens[self.i + 1].kind == "num":
            self.take()
            sign = -1.0
            t = self.tok
        if t.kind == "num":
            self.take()
            return Literal_(t.pos, "num", sign * float(t.text))
        if sign < 0:
            return None
        if t.kind == "str":
            self.take()
            return Literal_(t.pos, "str", _unquote(t))
        if t.kind == "kw" and t.text in ("true", "false"):
            self.take()
            return Literal_(t.pos, "bool", t.text == "true")
        return None

    def check_values(self, a: Node, b: Node) -> None:
        if isinstance(a, Name) and isinstance(b, Literal_):
            self.check_value(a, b.value, b.pos)

    def check_value(self, name: Name, value: float | str | bool, pos: int) -> None:
        allowed = self.fields[name.name][1]
        if allowed is not None and value not in allowed:
            raise ExpressionError(
                f"{name.name} is one of {', '.join(repr(v) for v in allowed)}; {value!r}"
                " never matches",
                pos,
            )

    def sum(self) -> Node:
        left = self.product()
        chained = 0  # each operator of a chain nests the tree one level deeper
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            t = self.take()
            self.enter(t.pos)
            chained += 1
            right = self.product()
            _need(left, "num", f"'{t.text}'", t.pos)
            _need(right, "num", f"'{t.text}'", t.pos)
            left = Arith(left.pos, "num", t.text, left, right)
        self.depth -= chained
        return left

    def product(self) -> Node:
        left = self.unary()
        chained = 0  # each operator of a chain nests the tree one level deeper
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            t = self.take()
            self.enter(t.pos)
            chained += 1
            right = self.unary()
            _need(left, "num", f"'{t.text}'", t.pos)
            _need(right, "num", f"'{t.text}'", t.pos)
            left = Arith(left.pos, "num", t.text, left, right)
        self.depth -= chained
        return left

    def unary(self) -> Node:
        if self.at("op", "-"):
            t = self.take()
            self.enter(t.pos)
            try:
                operand = self.unary()
            finally:
                self.leave()
            _need(operand, "num", "'-'", t.pos)
            if isinstance(operand, Literal_) and operand.kind == "num":
                assert isinstance(operand.value, float)
                return Literal_(t.pos, "num", -operand.value)
            return Neg(t.pos, "num", operand)
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if self.at("op", "("):
            self.take()
            inner = self.expr()
            self.expect("op", ")", "')'")
            return inner
        if t.kind == "name":
            self.take()
            spec = self.fields.get(t.text)
            if spec is None:
                close = difflib.get_close_matches(t.text, list(self.fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ExpressionError(f"unknown field {t.text!r}{hint}", t.pos, name=t.text)
            return Name(t.pos, spec[0], t.text)
        lit = self.literal()
        if lit is not None:
            return lit
        raise ExpressionError(f"expected a value, found {_describe(t)}", t.pos)


def _need(node: Node, kind: Kind, where: str, pos: int) -> None:
    if node.kind != kind:
        raise ExpressionError(
            f"{where} needs {KIND_WORDS[kind]}, not {KIND_WORDS[node.kind]}", node.pos
        )


def _describe(t: Token) -> str:
    if t.kind == "end":
        return "the end of the expression"
    return repr(t.text)


def parse(text: str, fields: Mapping[str, FieldSpec]) -> Node:
    """The typed AST of a boolean expression; ExpressionError when it is not one."""
    if not isinstance(text, str):
        raise ExpressionError("expression must be a string", 0)
    tokens = tokenize(text)
    if tokens[0].kind == "end":
        raise ExpressionError("expression is empty", 0)
    p = _Parser(tokens, fields)
    node = p.expr()
    if not p.at("end"):
        raise ExpressionError(f"unexpected {_describe(p.tok)}", p.tok.pos)
    if node.kind != "bool":
        raise ExpressionError(
            f"a rule must be a condition (a boolean), not {KIND_WORDS[node.kind]}", node.pos
        )
    return node
