"""The rule engine: signature, corroboration, confidence, absent evidence, estimated inputs.

Rules and feature values are written out literally here: no trace is read.
"""

from __future__ import annotations

import pytest

from coherence_diag.features import FeatureValues
from coherence_diag.model import AbsentEvidence
from coherence_diag.rules.engine import evaluate, evaluate_rule
from coherence_diag.rules.explain import explain_rule
from coherence_diag.rules.loader import load_rules, render_template

RULE = """
id: tail-test
kind: pattern
mode: null
domain: AI.27
supporting_domains: []
title: A test rule
physics: Long tails.
condition: "tail_ratio > 2"
score: "0.3 + 0.2 * coalesce(ramp(queue_wait_p95_ms, 100, 1000), 0)"
corroboration:
  - {when: "timeout_rate >= 0.05", weight: 0.2, says: clients time out}
  - {when: "drift_class_p99_growth_ratio >= 1.2", weight: 0.1, says: the tail widens}
  - {when: "mempath_kv_p90_frac >= 0.75", weight: 0.1, says: the KV cache is full}
severity: {low: 0.0, medium: 0.3, high: 0.6, critical: 0.85}
summary: "tail ratio {tail_ratio:.1f}"
evidence: [tail_ratio, latency_p99_ms]
explanation: Tails are long.
next_checks: [Look at the tail.]
"""
ALL = {
    "tail_ratio": 4.0,
    "queue_wait_p95_ms": 1000.0,
    "timeout_rate": 0.1,
    "drift_class_p99_growth_ratio": 1.5,
    "mempath_kv_p90_frac": 0.9,
    "latency_p99_ms": 900.0,
}
COLUMNS = {"request_id", "predicted_ms", "dur_ms", "device", "kv_cache_util"}


@pytest.fixture(scope="module")
def rule(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "tail-test.yaml").write_text(RULE)
    return next(r for r in load_rules([d]) if r.id == "tail-test")


def _values(missing: dict | None = None, reasons: dict | None = None, **changes) -> FeatureValues:
    values = {**ALL, **changes}
    for name in missing or {}:
        values[name] = None
    return FeatureValues(values, {}, dict(missing or {}), dict(reasons or {}))


def test_every_signal_measured_and_holding_adds_its_weight(rule):
    finding = evaluate_rule(rule, _values(), COLUMNS, {}).finding
    assert finding is not None
    assert finding.score == pytest.approx(min(1.0, 0.5 + 0.2 + 0.1 + 0.1))
    assert finding.severity == "critical"
    assert finding.confidence == 1.0
    assert finding.corroborated_by == ("clients time out", "the tail widens", "the KV cache is full")
    assert finding.absent_evidence == ()


def test_signals_measured_but_not_holding_add_nothing_and_keep_full_confidence(rule):
    outcome = evaluate_rule(rule, _values(timeout_rate=0.0, drift_class_p99_growth_ratio=1.0, mempath_kv_p90_frac=0.1), COLUMNS, {})
    assert outcome.finding.score == pytest.approx(0.5) == outcome.signature_score
    assert outcome.finding.severity == "medium"
    assert outcome.finding.confidence == 1.0 and outcome.finding.corroborated_by == ()


def test_confidence_is_the_measured_share_of_corroborating_weight(rule):
    finding = evaluate_rule(rule, _values(missing={"mempath_kv_p90_frac": ("kv_cache_util",)}), COLUMNS - {"kv_cache_util"}, {}).finding
    assert finding.confidence == pytest.approx(0.3 / 0.4)
    assert finding.score == pytest.approx(0.8)
    finding = evaluate_rule(rule, _values(timeout_rate=None, drift_class_p99_growth_ratio=None, mempath_kv_p90_frac=None), COLUMNS, {}).finding
    assert finding.confidence == 0.0 and finding.score == pytest.approx(0.5)


def test_absent_evidence_names_missing_columns_or_the_reason(rule):
    values = _values(
        missing={"mempath_kv_p90_frac": ("kv_cache_util",)},
        reasons={"drift_class_p99_growth_ratio": "too few requests per class"},
        drift_class_p99_growth_ratio=None,
        timeout_rate=None,
    )
    finding = evaluate_rule(rule, values, COLUMNS, {}).finding
    assert finding is not None  # the signature held: absent corroboration does not stop the finding
    assert finding.absent_evidence == (
        AbsentEvidence("drift_class_p99_growth_ratio", (), "too few requests per class"),
        AbsentEvidence("mempath_kv_p90_frac", ("kv_cache_util",), None),
        AbsentEvidence("timeout_rate", (), "undefined in this trace"),
    )


def test_optional_score_inputs_are_absent_evidence_without_lowering_confidence(rule):
    finding = evaluate_rule(rule, _values(queue_wait_p95_ms=None), COLUMNS, {}).finding
    assert [a.signal for a in finding.absent_evidence] == ["queue_wait_p95_ms"]
    assert finding.confidence == 1.0
    assert finding.score == pytest.approx(0.3 + 0.4)


def test_estimated_inputs_name_derived_columns_the_finding_used(rule):
    derived = {"predicted_ms": "estimated from tokens"}
    finding = evaluate_rule(rule, _values(), COLUMNS, derived).finding
    assert finding.estimated_inputs == ("predicted_ms: estimated from tokens",)
    # the only feature reading predicted_ms is absent: nothing estimated was used
    finding = evaluate_rule(rule, _values(drift_class_p99_growth_ratio=None), COLUMNS, derived).finding
    assert finding.estimated_inputs == ()


def test_signature_undefined_or_missing_is_not_evaluable(rule):
    outcome = evaluate_rule(rule, _values(missing={"tail_ratio": ("request_id",)}), COLUMNS - {"request_id"}, {})
    assert not outcome.evaluability.evaluated and outcome.evaluability.missing == ("request_id",)
    assert outcome.finding is None
    outcome = evaluate_rule(rule, _values(reasons={"tail_ratio": "no completed request"}, tail_ratio=None), COLUMNS, {})
    assert not outcome.evaluability.evaluated and outcome.evaluability.reason == "no completed request"


def test_condition_not_held_is_evaluated_without_a_finding(rule):
    findings, evaluability = evaluate([rule], _values(tail_ratio=1.5), COLUMNS, {})
    assert findings == [] and evaluability["tail-test"].evaluated


def test_explanation_lays_out_clauses_terms_and_signals(rule):
    values = _values(missing={"mempath_kv_p90_frac": ("kv_cache_util",)}, timeout_rate=0.0)
    e = explain_rule(rule, values, COLUMNS - {"kv_cache_util"}, {"predicted_ms": "estimated from tokens"})
    assert e.verdict == "fired" and e.severity == "high" and e.final_score == pytest.approx(0.6)
    assert [(c.source, c.held, c.features) for c in e.clause_list] == [("tail_ratio > 2", True, {"tail_ratio": 4.0})]
    assert e.score_combine == "sum" and [t.value for t in e.score_terms] == pytest.approx([0.3, 0.2])
    assert [(s.measured, s.held) for s in e.corroboration] == [(True, False), (True, True), (False, None)]
    assert e.confidence == pytest.approx(0.75)
    assert [(u.name, u.role, u.missing) for u in e.undefined] == [("mempath_kv_p90_frac", "corroboration", ("kv_cache_util",))]
    assert e.estimated_inputs == ("predicted_ms: estimated from tokens",)
    quiet = explain_rule(rule, _values(tail_ratio=1.0), COLUMNS, {})
    assert quiet.verdict == "condition-not-held" and quiet.severity is None and quiet.clause_list[0].held is False
    undecided = explain_rule(rule, _values(tail_ratio=None), COLUMNS, {})
    assert undecided.verdict == "not-evaluable" and undecided.condition_held is None
    assert [(u.name, u.role) for u in undecided.undefined] == [("tail_ratio", "signature")]


def test_a_symptom_defers_to_a_cause_found_on_the_same_trace():
    """sla-degradation-without-shortage is the symptom; a mode that explains the same misses is
    the diagnosis: the symptom stays in the report at low severity, naming its cause."""
    from coherence_diag.model import Finding
    from coherence_diag.rules.engine import defer_to_causes

    symptom = Finding("sla-degradation-without-shortage", "pattern", None, "AI.27", (), "high", 0.7, "s", {"x": 1})
    cause = Finding("memory-path-incoherence", "mode", "memory-path-incoherence", "AI.07", (), "medium", 0.4, "c", {})
    weak_cause = Finding("memory-path-incoherence", "mode", "memory-path-incoherence", "AI.07", (), "low", 0.1, "c", {})
    defers = {"sla-degradation-without-shortage": ("memory-path-incoherence", "latency-asymmetry-drift")}
    out = defer_to_causes([symptom, cause], defers)
    assert out[0].severity == "low" and out[0].evidence == {"x": 1, "explained_by": ["memory-path-incoherence"]}
    assert out[1] == cause
    assert defer_to_causes([symptom, weak_cause], defers)[0] == symptom  # a low cause explains nothing
    assert defer_to_causes([symptom], defers)[0] == symptom
    shipped = {r.id: r for r in load_rules()}
    assert "memory-path-incoherence" in shipped["sla-degradation-without-shortage"].defers_to


def test_summary_leaves_out_sentences_whose_values_are_undefined():
    template = "Links are saturated {sat:.0%} of the time. Transfers take {share:.0%} of latency. Done at {x:.1f}x."
    assert render_template(template, {"sat": 0.5, "share": None, "x": 2.0}) == (
        "Links are saturated 50% of the time. Done at 2.0x."
    )
    # With no complete sentence, the text keeps every sentence and says which values are missing.
    assert render_template(template, {}) == (
        "Links are saturated n/a of the time. Transfers take n/a of latency. Done at n/ax."
    )
    # A decimal point inside a sentence or a format spec does not end it.
    assert render_template("Ratio {r:.2f} vs 1.5 limit. Missing {m}.", {"r": 2.0}) == "Ratio 2.00 vs 1.5 limit."
