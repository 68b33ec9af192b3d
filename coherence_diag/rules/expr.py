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
through arithmetic and the ordinary functions; a comparison with None is false; `and`/`or`/`not`
treat None as false. So a condition whose inputs are missing never holds. The engine decides a
condition with `decide` instead, in three-valued logic: a clause reading an undefined value is
undecided, and a rule whose condition is undecided is not evaluable.

The null-aware functions combine only the terms that are defined, for signals that may be
absent from a trace (optional columns, a fleet shape without that layer):
    coalesce(a, b, ...)   the first defined argument
    defined(x)            true when x is defined
    mean_of(a, b, ...)    mean of the defined arguments
    product_of(a, b, ...) product of the defined arguments
    max_of / min_of       maximum / minimum of the defined arguments
Each is None only when no argument is defined. `NULL_AWARE` names them; the rule loader uses it
to reject a score that would silently become undefined when one of its inputs is.

`clauses`, `connective` and `terms` split a condition into its clauses and a score into its terms,
and `unparse` writes a node back as text, for `explain --trace` (rules/explain.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Value = float | bool | None


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
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Num | Bool | Name | Call | Unary | Binary


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


def _defined_only(combine: Callable[[list[float]], float]) -> Callable[..., float | None]:
    def over_defined(*args: float | None) -> float | None:
        present = [a for a in args if a is not None]
        return combine(present) if present else None

    return over_defined


# name -> (arity or None for variadic >= 1, implementation over possibly-None arguments)
NULL_AWARE: dict[str, tuple[int | None, Callable[..., Value]]] = {
    "coalesce": (None, _defined_only(lambda xs: xs[0])),
    "defined": (1, lambda x: x is not None),
    "mean_of": (None, _defined_only(lambda xs: math.fsum(xs) / len(xs))),
    "product_of": (None, _defined_only(math.prod)),
    "max_of": (None, _defined_only(max)),
    "min_of": (None, _defined_only(min)),
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


def subexpression(node: Node) -> Expression:
    """A node of a parsed expression as an expression of its own (its source is `unparse(node)`)."""
    return Expression(unparse(node), node, frozenset(_names(node)))


def connective(node: Node) -> tuple[str, tuple[Node, ...]] | None:
    """("and" | "or", operands) when `node` is an `and` / `or` chain, its operands flattened
    (`a and b and c` gives three); None for anything else."""
    if not (isinstance(node, Binary) and node.op in ("and", "or")):
        return None

    def operands(n: Node) -> list[Node]:
        if isinstance(n, Binary) and n.op == node.op:
            return operands(n.left) + operands(n.right)
        return [n]

    return node.op, tuple(operands(node))


def clauses(node: Node) -> tuple[Node, ...]:
    """The clauses of a condition: the leaves of its top-level `and`/`or` tree, in source order
    (comparisons, `not ...`, `defined(...)`), e.g. three for `a > 1 and (b < 2 or not c > 3)`."""
    split = connective(node)
    if split is None:
        return (node,)
    return tuple(leaf for operand in split[1] for leaf in clauses(operand))


def terms(node: Node) -> tuple[str, tuple[tuple[str, Node], ...]] | None:
    """How a score is built at its top level: ("sum", ((sign, term), ...)) for `a + b - c`,
    ("product", ((op, factor), ...)) for `a * b / c`, (function, (("", argument), ...)) for a
    call of a function of any number of arguments (max_of, min, ...); None for a single term."""
    def chain(n: Node, ops: tuple[str, str], lead: str) -> list[tuple[str, Node]]:
        if isinstance(n, Binary) and n.op in ops:
            return chain(n.left, ops, lead) + [(n.op, n.right)]
        return [(lead, n)]

    if isinstance(node, Binary) and node.op in ("+", "-"):
        return "sum", tuple(chain(node, ("+", "-"), "+"))
    if isinstance(node, Binary) and node.op in ("*", "/"):
        return "product", tuple(chain(node, ("*", "/"), "*"))
    if isinstance(node, Call) and len(node.args) > 1 and (FUNCTIONS.get(node.func) or NULL_AWARE[node.func])[0] is None:
        return node.func, tuple(("", a) for a in node.args)
    return None


# Binding strength of each operator (higher binds tighter), as in the grammar above.
_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4,
               "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def unparse(node: Node) -> str:
    """Expression text of a node (normalised spacing, only the parentheses it needs):
    parse(unparse(n)).tree == n."""
    return _unparse(node)


def _precedence(node: Node) -> int:
    if isinstance(node, Binary):
        return _PRECEDENCE[node.op]
    if isinstance(node, Unary):
        return _PRECEDENCE["not" if node.op == "not" else "neg"]
    return 8


def _unparse(node: Node, at_least: int = 0) -> str:
    if isinstance(node, Num):
        text = repr(node.value)
        text = text[:-2] if text.endswith(".0") else text
    elif isinstance(node, Bool):
        text = "true" if node.value else "false"
    elif isinstance(node, Name):
        text = node.name
    elif isinstance(node, Call):
        text = f"{node.func}({', '.join(_unparse(a) for a in node.args)})"
    elif isinstance(node, Unary):
        own = _precedence(node)
        text = f"not {_unparse(node.operand, own)}" if node.op == "not" else f"-{_unparse(node.operand, own)}"
    else:
        own = _precedence(node)
        # Operators associate to the left; a comparison takes no comparison as an operand.
        left = _unparse(node.left, own + 1 if own == 4 else own)
        text = f"{left} {node.op} {_unparse(node.right, own + 1)}"
    return f"({text})" if _precedence(node) < at_least else text


def guarded_names(node: Node) -> set[str]:
    """Names that are certainly defined whenever `node` holds (is true).

    A comparison is false when an operand outside a null-aware function is undefined, so its
    names are guarded; `and` guards the names of both sides, `or` only those of both branches;
    `not` guards nothing (not None is true).
    """
    if isinstance(node, Binary):
        if node.op == "and":
            return guarded_names(node.left) | guarded_names(node.right)
        if node.op == "or":
            return guarded_names(node.left) & guarded_names(node.right)
        return strict_names(node)
    if isinstance(node, Name):
        return {node.name}  # used as a truth value: None is false
    if isinstance(node, Call) and node.func not in NULL_AWARE:
        return strict_names(node)
    return set()


def strict_names(node: Node) -> set[str]:
    """Names whose undefined value makes `node` undefined (those outside null-aware functions)."""
    if isinstance(node, Name):
        return {node.name}
    if isinstance(node, Call):
        if node.func in NULL_AWARE:
            return set()
        return set().union(*(strict_names(a) for a in node.args))
    if isinstance(node, Unary):
        return strict_names(node.operand)
    if isinstance(node, Binary):
        return strict_names(node.left) | strict_names(node.right)
    return set()


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
        if name.text not in FUNCTIONS and name.text not in NULL_AWARE:
            raise ExprError(
                f"unknown function {name.text!r} at column {name.pos + 1}; "
                f"allowed: {', '.join(sorted([*FUNCTIONS, *NULL_AWARE]))}"
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
        arity = (FUNCTIONS.get(name.text) or NULL_AWARE[name.text])[0]
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


def truth(value: Value) -> bool:
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
            return not truth(_eval(node.operand, values))
        x = _num(_eval(node.operand, values))
        return None if x is None else -x
    if isinstance(node, Call):
        args = [_num(_eval(a, values)) for a in node.args]
        if node.func in NULL_AWARE:
            out = NULL_AWARE[node.func][1](*args)
            return None if isinstance(out, float) and math.isnan(out) else out
        if any(a is None for a in args):
            return None
        result = FUNCTIONS[node.func][1](*args)
        return None if isinstance(result, float) and math.isnan(result) else float(result)
    if isinstance(node, Binary):
        if node.op == "and":
            return truth(_eval(node.left, values)) and truth(_eval(node.right, values))
        if node.op == "or":
            return truth(_eval(node.left, values)) or truth(_eval(node.right, values))
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


def decide(expr: Expression, values: Mapping[str, Value]) -> bool | None:
    """The truth of a condition in three-valued (Kleene) logic: None when it depends on an
    undefined value (an `and` with a false side is false and an `or` with a true side is true
    whatever the other side is). A rule whose condition is undecided is not evaluable."""
    return _decide(expr.tree, values)


def _decide(node: Node, values: Mapping[str, Value]) -> bool | None:
    if isinstance(node, Binary) and node.op in ("and", "or"):
        left, right = _decide(node.left, values), _decide(node.right, values)
        if node.op == "and":
            if left is False or right is False:
                return False
            return None if left is None or right is None else True
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(node, Unary) and node.op == "not":
        inner = _decide(node.operand, values)
        return None if inner is None else not inner
    if isinstance(node, Binary) and node.op in ("<", "<=", ">", ">=", "==", "!="):
        if _num(_eval(node.left, values)) is None or _num(_eval(node.right, values)) is None:
            return None
    value = _eval(node, values)
    return None if value is None else truth(value)
