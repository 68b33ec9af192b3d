"""The rule expression language: a tiny, total language parsed here, never by Python.

Rule files are data. Conditions and scores are written in this language, tokenized and parsed
by the recursive-descent parser below into a small AST that is evaluated over a mapping of
feature values. There is no attribute access, indexing, string literal, assignment or call of
anything but the whitelisted functions, so a rule file cannot run code.

Grammar:
    expr  := or
    or    := and ("or" and)*
    and   := not ("and" not)*
    not   := "not" not | cmp
    cmp   := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum   := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := "-" unary | atom
    atom  := NUMBER | "true" | "false" | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"

Values are floats, booleans or None (a feature that could not be computed). None propagates
through arithmetic and functions; a comparison with None is false; `and`/`or`/`not` treat None
as false. So a rule whose inputs are missing never fires: it is reported as not evaluable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Union

Value = Union[float, bool, None]


class ExprError(ValueError):
    """A syntax or name error in an expression; the message says where."""


# --- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|[-+*/<>(),]))"
)
_KEYWORDS = {"and", "or", "not", "true", "false"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # num | name | op | kw | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].lstrip()[:1]
            col = len(text) - len(text[pos:].lstrip())
            raise ExprError(f"unexpected character {bad!r} at column {col + 1}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        if kind == "name" and value in _KEYWORDS:
            kind = "kw"
        tokens.append(_Tok(kind, value, start))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


# --- AST ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Node", ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: "Node"


@dataclass(frozen=True)
class Binary:
    op: str
    left: "Node"
    right: "Node"


Node = Union[Num, Bool, Name, Call, Unary, Binary]


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below lo, 1 at or above hi, linear between (lo > hi ramps downward)."""
    if lo == hi:
        return 1.0 if x >= hi else 0.0
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


# name -> (arity or None for variadic >= 1, implementation)
FUNCTIONS: dict[str, tuple[int | None, Callable[..., float]]] = {
    "min": (None, min),
    "max": (None, max),
    "abs": (1, abs),
    "clip": (3, lambda x, lo, hi: min(hi, max(lo, x))),
    "ramp": (3, _ramp),
    "log": (1, lambda x: math.log(x) if x > 0 else float("-inf")),
    "sqrt": (1, lambda x: math.sqrt(x) if x >= 0 else float("nan")),
}


@dataclass(frozen=True)
class Expression:
    """A parsed expression with the feature names it reads."""

    source: str
    tree: Node
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, Value]) -> Value:
        return _eval(self.tree, values)


def parse(text: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExprError("empty expression")
    parser = _Parser(_tokenize(text))
    tree = parser.expr()
    parser.expect_end()
    return Expression(text, tree, frozenset(_names(tree)))


def _names(node: Node) -> set[str]:
    if isinstance(node, Name):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(_names(a) for a in node.args))
    if isinstance(node, Unary):
        return _names(node.operand)
    if isinstance(node, Binary):
        return _names(node.left) | _names(node.right)
    return set()


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("op", "kw") and self.tok.text in texts

    def fail(self, what: str) -> ExprError:
        found = "end of expression" if self.tok.kind == "end" else repr(self.tok.text)
        return ExprError(f"{what}, found {found} at column {self.tok.pos + 1}")

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            raise self.fail("expected an operator or the end")

    def expr(self) -> Node:
        return self.or_()

    def or_(self) -> Node:
        node = self.and_()
        while self.at("or"):
            self.take()
            node = Binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("and"):
            self.take()
            node = Binary("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("not"):
            self.take()
            return Unary("not", self.not_())
        return self.cmp()

    def cmp(self) -> Node:
        node = self.sum()
        if self.at("<", "<=", ">", ">=", "==", "!="):
            op = self.take().text
            node = Binary(op, node, self.sum())
            if self.at("<", "<=", ">", ">=", "==", "!="):
                raise self.fail("chained comparisons are not allowed; combine with `and`")
        return node

    def sum(self) -> Node:
        node = self.term()
        while self.at("+", "-"):
            op = self.take().text
            node = Binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*", "/"):
            op = self.take().text
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.take()
            return Unary("-", self.unary())
        return self.atom()

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            return Num(float(tok.text))
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.take()
            return Bool(tok.text == "true")
        if tok.kind == "name":
            self.take()
            if self.at("("):
                return self.call(tok)
            return Name(tok.text)
        if self.at("("):
            self.take()
            node = self.expr()
            if not self.at(")"):
                raise self.fail("expected ')'")
            self.take()
            return node
        raise self.fail("expected a number, a feature name, a function call or '('")

    def call(self, name: _Tok) -> Node:
        if name.text not in FUNCTIONS:
            raise ExprError(
                f"unknown function {name.text!r} at column {name.pos + 1}; "
                f"allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        self.take()  # "("
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take()
                args.append(self.expr())
        if not self.at(")"):
            raise self.fail("expected ',' or ')'")
        self.take()
        arity = FUNCTIONS[name.text][0]
        if (arity is None and not args) or (arity is not None and len(args) != arity):
            want = "at least 1" if arity is None else str(arity)
            raise ExprError(f"{name.text}() takes {want} argument(s), got {len(args)} (column {name.pos + 1})")
        return Call(name.text, tuple(args))


def _num(value: Value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def _truth(value: Value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _eval(node: Node, values: Mapping[str, Value]) -> Value:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Bool):
        return node.value
    if isinstance(node, Name):
        value = values.get(node.name)
        if isinstance(value, float) and math.isnan(value):
            return None
        return value
    if isinstance(node, Unary):
        if node.op == "not":
            return not _truth(_eval(node.operand, values))
        x = _num(_eval(node.operand, values))
        return None if x is None else -x
    if isinstance(node, Call):
        args = [_num(_eval(a, values)) for a in node.args]
        if any(a is None for a in args):
            return None
        result = FUNCTIONS[node.func][1](*args)
        return None if isinstance(result, float) and math.isnan(result) else float(result)
    if isinstance(node, Binary):
        if node.op == "and":
            return _truth(_eval(node.left, values)) and _truth(_eval(node.right, values))
        if node.op == "or":
            return _truth(_eval(node.left, values)) or _truth(_eval(node.right, values))
        left = _num(_eval(node.left, values))
        right = _num(_eval(node.right, values))
        if left is None or right is None:
            return False if node.op in ("<", "<=", ">", ">=", "==", "!=") else None
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if node.op == "/":
            return None if right == 0 else left / right
        return {
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
            "==": left == right,
            "!=": left != right,
        }[node.op]
    raise TypeError(f"unknown node {node!r}")  # unreachable: the parser builds only the nodes above
