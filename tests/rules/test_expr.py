"""The rule expression language: parsing, evaluation, null semantics, and refusal of code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coherence_diag.rules.expr import (
    ExprError,
    clauses,
    connective,
    decide,
    guarded_names,
    parse,
    strict_names,
    terms,
    unparse,
)


@pytest.mark.parametrize(
    "text, values, expected",
    [
        ("1 + 2 * 3", {}, 7.0),
        ("(1 + 2) * 3", {}, 9.0),
        ("-x + 4", {"x": 1.5}, 2.5),
        ("a > 0.5 and b <= 2", {"a": 0.6, "b": 2.0}, True),
        ("a > 0.5 and not b <= 2", {"a": 0.6, "b": 2.0}, False),
        ("a > 1 or b > 1", {"a": 0.0, "b": 3.0}, True),
        ("max(a, b, 0.2)", {"a": 0.1, "b": 0.15}, 0.2),
        ("min(a, 1)", {"a": 3.0}, 1.0),
        ("clip(a * 2, 0, 1)", {"a": 0.8}, 1.0),
        ("ramp(a, 1, 3)", {"a": 2.0}, 0.5),
        ("ramp(a, 3, 1)", {"a": 2.5}, 0.25),
        ("abs(a - b)", {"a": 1.0, "b": 3.0}, 2.0),
        ("a / b", {"a": 1.0, "b": 0.0}, None),
        ("1e-3 * 2", {}, 0.002),
        ("true and false", {}, False),
    ],
)
def test_evaluation(text, values, expected):
    assert parse(text).evaluate(values) == expected


def test_missing_feature_propagates_and_never_fires():
    expr = parse("a > 1 and b * 2 > 0")
    assert expr.evaluate({"a": 2.0, "b": None}) is False
    assert parse("b * 2").evaluate({"b": None}) is None
    assert parse("not (b > 1)").evaluate({"b": None}) is True  # comparison with null is false
    assert parse("max(a, b)").evaluate({"a": 1.0, "b": None}) is None


def test_names_are_collected():
    assert parse("ramp(queue_share, 0.3, 0.7) * (1 - x) > y").names == {"queue_share", "x", "y"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os')", "unexpected character"),
        ("os.system", "unexpected character '.'"),
        ("a[0]", "unexpected character '['"),
        ("lambda: 1", "unexpected character ':'"),
        ("open(x)", "unknown function 'open'"),
        ("eval(x)", "unknown function 'eval'"),
        ("a > ", "expected a number"),
        ("(a > 1", "expected ')'"),
        ("a b", "expected an operator"),
        ("1 < a < 2", "chained comparisons"),
        ("ramp(a, 1)", "takes 3 argument"),
        ("max()", "takes at least 1"),
        ("", "empty"),
        ("a = 1", "unexpected character '='"),
    ],
)
def test_syntax_errors_are_rejected_with_position(text, fragment):
    with pytest.raises(ExprError) as err:
        parse(text)
    assert fragment in str(err.value)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_arithmetic_matches_python(a, b):
    assert parse("a + b * 2 - a / 4").evaluate({"a": a, "b": b}) == pytest.approx(a + b * 2 - a / 4)


@given(st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, 10))
def test_ramp_stays_in_unit_interval(x, lo, hi):
    value = parse("ramp(x, lo, hi)").evaluate({"x": x, "lo": lo, "hi": hi})
    assert 0.0 <= value <= 1.0


# --- null-aware functions -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, values, expected",
    [
        ("coalesce(a, b, 3)", {"a": None, "b": 2.0}, 2.0),
        ("coalesce(a, b)", {"a": None, "b": None}, None),
        ("coalesce(a, 0) >= 0.75", {"a": None}, False),
        ("defined(a)", {"a": None}, False),
        ("defined(a)", {"a": 0.0}, True),
        ("not defined(a)", {"a": None}, True),
        ("mean_of(a, b, c)", {"a": 1.0, "b": None, "c": 3.0}, 2.0),
        ("mean_of(a, b)", {"a": None, "b": None}, None),
        ("product_of(a, b, c)", {"a": 2.0, "b": None, "c": 4.0}, 8.0),
        ("max_of(a, b)", {"a": None, "b": 0.3}, 0.3),
        ("min_of(a, b, 0.5)", {"a": None, "b": 0.7}, 0.5),
        ("max_of(ramp(a, 0, 1), ramp(b, 0, 1))", {"a": None, "b": 0.25}, 0.25),
        ("0.3 + 0.3 * max_of(a, b)", {"a": None, "b": None}, None),
        ("max_of(a / b, 1)", {"a": 1.0, "b": 0.0}, 1.0),  # an undefined division is skipped
    ],
)
def test_null_aware_functions(text, values, expected):
    assert parse(text).evaluate(values) == expected


@pytest.mark.parametrize("text", ["defined()", "defined(a, b)", "coalesce()"])
def test_null_aware_arity(text):
    with pytest.raises(ExprError):
        parse(text)


# --- three-valued decision (Kleene) ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, values, expected",
    [
        ("a > 1", {"a": None}, None),
        ("a > 1", {"a": 2.0}, True),
        ("a > 1", {"a": 0.0}, False),
        ("a > 1 and b > 1", {"a": 0.0, "b": None}, False),  # a false side decides `and`
        ("b > 1 and a > 1", {"a": 0.0, "b": None}, False),
        ("a > 1 and b > 1", {"a": 2.0, "b": None}, None),
        ("a > 1 or b > 1", {"a": 2.0, "b": None}, True),  # a true side decides `or`
        ("b > 1 or a > 1", {"a": 2.0, "b": None}, True),
        ("a > 1 or b > 1", {"a": 0.0, "b": None}, None),
        ("not a > 1", {"a": None}, None),
        ("not a > 1", {"a": 0.0}, True),
        ("coalesce(a, 0) >= 1 or b > 1", {"a": None, "b": None}, None),
        ("coalesce(a, 0) >= 1 or coalesce(b, 2) > 1", {"a": None, "b": None}, True),
        ("not defined(a) or a > 1", {"a": None}, True),
        ("defined(a) and a > 1", {"a": None}, False),
        ("max(a, b) >= 1", {"a": 2.0, "b": None}, None),  # plain max is strict
        ("max_of(a, b) >= 1", {"a": 2.0, "b": None}, True),
        ("a / b > 1", {"a": 1.0, "b": 0.0}, None),
        ("(a > 1 and b > 1) or (c > 1 and d > 1)", {"a": 2.0, "b": 2.0, "c": None, "d": None}, True),
        ("(a > 1 and b > 1) or (c > 1 and d > 1)", {"a": 2.0, "b": None, "c": 0.0, "d": None}, None),
    ],
)
def test_decide_is_kleene(text, values, expected):
    assert decide(parse(text), values) is expected


@given(st.sampled_from([None, True, False]), st.sampled_from([None, True, False]))
def test_decide_matches_kleene_truth_tables(x, y):
    values = {"a": None if x is None else float(x), "b": None if y is None else float(y)}
    both = decide(parse("a > 0.5 and b > 0.5"), values)
    either = decide(parse("a > 0.5 or b > 0.5"), values)
    assert both is (False if False in (x, y) else None if None in (x, y) else True)
    assert either is (True if True in (x, y) else None if None in (x, y) else False)


# --- guarded and strict names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, guarded, strict",
    [
        ("a > 1", {"a"}, {"a"}),
        ("a > 1 and b < 2", {"a", "b"}, {"a", "b"}),
        ("a > 1 or b < 2", set(), {"a", "b"}),
        ("(a > 1 and b > 1) or (a > 2 and c > 1)", {"a"}, {"a", "b", "c"}),
        ("not a > 1", set(), {"a"}),
        ("coalesce(a, 0) >= 1 and b > 1", {"b"}, {"b"}),
        ("defined(a) and a > 1", {"a"}, {"a"}),
        ("not defined(a) or a > 1", set(), {"a"}),
        ("ramp(a, 1, 2) * max_of(b, c)", {"a"}, {"a"}),
        ("max(a, b) >= 1", {"a", "b"}, {"a", "b"}),
        ("flag", {"flag"}, {"flag"}),
    ],
)
def test_guarded_and_strict_names(text, guarded, strict):
    tree = parse(text).tree
    assert guarded_names(tree) == guarded
    assert strict_names(tree) == strict


# --- clauses, terms and expression text --------------------------------------------------------


def test_clauses_split_the_and_or_tree_in_source_order():
    tree = parse("a > 1 and (b < 2 or not c > 3) and defined(d)").tree
    assert [unparse(c) for c in clauses(tree)] == ["a > 1", "b < 2", "not c > 3", "defined(d)"]
    op, operands = connective(tree)
    assert op == "and" and [unparse(o) for o in operands] == ["a > 1", "b < 2 or not c > 3", "defined(d)"]
    assert connective(parse("a > 1").tree) is None
    assert [unparse(c) for c in clauses(parse("a + 1 > 2").tree)] == ["a + 1 > 2"]


@pytest.mark.parametrize(
    "text, combine, parts",
    [
        ("0.3 + 0.25 * ramp(a, 1, 2) - b", "sum", [("+", "0.3"), ("+", "0.25 * ramp(a, 1, 2)"), ("-", "b")]),
        ("ramp(a, 1, 2) * ramp(b, 0, 1) / c", "product", [("*", "ramp(a, 1, 2)"), ("*", "ramp(b, 0, 1)"), ("/", "c")]),
        ("max_of(a + 1, b)", "max_of", [("", "a + 1"), ("", "b")]),
    ],
)
def test_score_terms(text, combine, parts):
    split = terms(parse(text).tree)
    assert split is not None and split[0] == combine
    assert [(op, unparse(n)) for op, n in split[1]] == parts
    assert terms(parse("ramp(a, 1, 2)").tree) is None


@pytest.mark.parametrize(
    "text",
    [
        "a - (b - c)",
        "(a - b) - c",
        "a / (b * c)",
        "-(a + b) * c",
        "not (a > 1 and b > 1)",
        "a > 1 and (b > 1 or c > 1)",
        "(a > 1 or b > 1) and c > 1",
        "a > 1 or (b > 1 or c > 1)",
        "(a < b) == true",
        "- -a",
        "1e-09 * a + 0.15",
        "coalesce(a, 0) >= 0.75 or max_of(ramp(b, 1, 2), c) > 0.5",
    ],
)
def test_unparse_round_trips(text):
    tree = parse(text).tree
    assert parse(unparse(tree)).tree == tree


def test_unparse_round_trips_every_shipped_expression():
    from coherence_diag.rules.loader import load_rules

    for rule in load_rules():
        for expr in (rule.condition, rule.score, *(c.when for c in rule.corroboration)):
            assert parse(unparse(expr.tree)).tree == expr.tree, (rule.id, expr.source)
            for clause in clauses(expr.tree):
                assert parse(unparse(clause)).tree == clause
