"""Literal rule test cases: feature values in, verdict out, straight through the engine (no trace).

Each shipped rule has `tests/rules/literal/<rule-id>.yaml`:

    rule: burst-amplification
    cases:
      - name: signature and every corroborating signal hold
        features: {burst_episodes: 3, burst_time_frac: 0.07, ...}   # a value, or null (undefined)
        columns: [request_id, dur_ms]      # optional: the trace's columns (default: every known one)
        derived: {predicted_ms: how}       # optional: columns the analysis estimated
        expect: {fires: true, min_severity: high, confidence: 1, corroborated: 2, absent: []}

A feature the case does not list is undefined (null, reason "not given"); a feature whose columns
`columns` leaves out is undefined for lack of them (it may not be given a value). `expect` keys:
fires, evaluable (bool); severity, min_severity, max_severity (a severity; max_severity null: must
not fire); confidence (number); corroborated (how many signals held); absent (the finding's absent
signals: a list of names, or a mapping name -> the columns that would give it); missing_columns
(of a rule that is not evaluable); estimated (the estimated columns the finding names). Each case is
also explained (rules/explain.py), whose verdict must agree with the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coherence_diag import schema
from coherence_diag.features import FEATURES, FeatureValues
from coherence_diag.model import SEVERITIES
from coherence_diag.rules.engine import evaluate_rule
from coherence_diag.rules.explain import explain_rule
from coherence_diag.rules.loader import Rule, load_rules

LITERAL_DIR = Path(__file__).parent / "literal"
RULES = {r.id: r for r in load_rules()}
RANK = {s: i for i, s in enumerate(SEVERITIES)}
EXPECT_KEYS = {"fires", "evaluable", "severity", "min_severity", "max_severity", "confidence", "corroborated", "absent",
               "missing_columns", "estimated"}
CASE_KEYS = {"name", "features", "columns", "derived", "expect"}


def _specs() -> list[tuple[Path, dict]]:
    return [(p, yaml.safe_load(p.read_text())) for p in sorted(LITERAL_DIR.glob("*.yaml"))]


def _cases():
    for path, spec in _specs():
        for case in spec["cases"]:
            yield pytest.param(spec["rule"], case, id=f"{path.stem}: {case['name']}")


def feature_values(rule: Rule, case: dict) -> tuple[FeatureValues, set[str]]:
    """The FeatureValues and trace columns a case describes."""
    given = case.get("features") or {}
    unknown = sorted(set(given) - set(FEATURES))
    assert not unknown, f"unknown features in the case: {unknown}"
    columns = set(schema.COLUMNS) if case.get("columns") is None else set(case["columns"])
    values: dict[str, float | None] = {}
    missing: dict[str, tuple[str, ...]] = {}
    reasons: dict[str, str] = {}
    for name in sorted(rule.features | set(given)):
        needs = tuple(c for c in FEATURES[name].requires if c not in columns)
        value = given.get(name)
        if needs:
            assert value is None, f"{name} is given a value but its columns {needs} are not in `columns`"
            values[name], missing[name] = None, needs
        elif value is None:
            values[name] = None
            reasons[name] = "given as null" if name in given else "not given"
        else:
            values[name] = float(value)
    return FeatureValues(values, {}, missing, reasons), columns


def test_every_shipped_rule_has_literal_cases():
    specs = {spec["rule"]: (path, spec) for path, spec in _specs()}
    assert set(specs) <= set(RULES), f"literal cases for unknown rules: {sorted(set(specs) - set(RULES))}"
    not_evaluable = 0
    for rule_id in RULES:
        assert rule_id in specs, f"rule {rule_id} has no literal test cases ({LITERAL_DIR / (rule_id + '.yaml')})"
        path, spec = specs[rule_id]
        assert path.stem == rule_id, f"{path}: holds the cases of {spec['rule']}"
        cases = spec["cases"]
        assert len(cases) >= 3, f"{rule_id}: fewer than 3 literal cases"
        assert any(c["expect"].get("fires") is True for c in cases), f"{rule_id}: no case where it fires"
        assert any(c["expect"].get("fires") is False for c in cases), f"{rule_id}: no case where it stays quiet"
        not_evaluable += any(c["expect"].get("evaluable") is False for c in cases)
    assert not_evaluable >= 4, "at least 4 rules need a case whose condition is undecidable"


@pytest.mark.parametrize("rule_id, case", list(_cases()))
def test_literal_case(rule_id, case):
    assert rule_id in RULES, f"case file for unknown rule {rule_id}"
    assert set(case) <= CASE_KEYS, f"unknown case keys {sorted(set(case) - CASE_KEYS)}"
    expect = case["expect"]
    assert set(expect) <= EXPECT_KEYS, f"unknown expect keys {sorted(set(expect) - EXPECT_KEYS)}"
    rule = RULES[rule_id]
    features, columns = feature_values(rule, case)
    derived = case.get("derived") or {}
    outcome = evaluate_rule(rule, features, columns, derived)
    finding = outcome.finding
    e = outcome.evaluability
    got = f"evaluability {e}, finding {finding}, condition held {outcome.condition_held}, score {outcome.signature_score}"

    if "evaluable" in expect:
        assert e.evaluated is expect["evaluable"], got
    if "fires" in expect:
        assert (finding is not None) is expect["fires"], got
    severity = finding.severity if finding else None
    if "severity" in expect:
        assert severity == expect["severity"], got
    if "min_severity" in expect:
        assert severity is not None and RANK[severity] >= RANK[expect["min_severity"]], got
    if "max_severity" in expect:
        limit = expect["max_severity"]
        assert severity is None if limit is None else (severity is None or RANK[severity] <= RANK[limit]), got
    if "missing_columns" in expect:
        assert sorted(e.missing) == sorted(expect["missing_columns"]), got
    for key in ("confidence", "corroborated", "absent", "estimated"):
        if key in expect:
            assert finding is not None, f"expect.{key} needs a finding; {got}"
    if "confidence" in expect:
        assert finding.confidence == pytest.approx(expect["confidence"], abs=1e-6), got
    if "corroborated" in expect:
        assert len(finding.corroborated_by) == expect["corroborated"], got
    if "absent" in expect:
        absent = expect["absent"]
        if isinstance(absent, dict):
            assert {a.signal: sorted(a.missing) for a in finding.absent_evidence} == {k: sorted(v) for k, v in absent.items()}, got
        else:
            assert sorted(a.signal for a in finding.absent_evidence) == sorted(absent), got
    if "estimated" in expect:
        assert sorted(s.split(":")[0] for s in finding.estimated_inputs) == sorted(expect["estimated"]), got

    explained = explain_rule(rule, features, columns, derived)
    assert explained.evaluability == e
    assert (explained.verdict == "fired") is (finding is not None)
    assert explained.severity == severity
