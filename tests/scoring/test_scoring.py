"""`scoring.score_suite` on the tiny sample suite: exact counts, P/R/F1, confusion, controls,
index directions; the pure scoring rule on hand-made outcomes; determinism across workers."""

from __future__ import annotations

import pytest

from coherence_diag.model import Finding, Indices
from coherence_diag.render.score import render_json
from coherence_diag.scoring import (
    DIRECTION_RULES,
    EACH_DEGRADED,
    ConfusionEntry,
    LabelledTrace,
    Labels,
    ReportedRule,
    TraceOutcome,
    accuracy_gate,
    reported_rules,
    score_outcomes,
    score_suite,
)
from coherence_diag.taxonomy import BASELINES, MODES, PATTERNS
from tests.scoring.conftest import BURST, LAD, MEM, QWD, SLA


@pytest.fixture(scope="module")
def result(suite):
    return score_suite(suite, jobs=2)  # spawned workers


def test_per_rule_counts_and_scores(result):
    got = {r.rule: (r.tp, r.fp, r.fn, round(r.precision, 6), round(r.recall, 6), round(r.f1, 6)) for r in result.rules}
    assert got == {
        BURST: (1, 0, 1, 1.0, 0.5, 0.666667),  # found at seed 0; the unreadable trace at seed 2 is a miss
        QWD: (0, 1, 0, 0.0, 1.0, 0.0),  # the wrong label: reported, not expected (allowed at seed 1: ignored)
        SLA: (0, 0, 2, 1.0, 0.0, 0.0),  # reported nowhere: P = 1 by definition, R = 0
        MEM: (1, 1, 0, 0.5, 1.0, 0.666667),  # found once; reported once on a control
        LAD: (0, 0, 0, 1.0, 1.0, 1.0),  # nothing expected, nothing reported
    }
    assert [r.rule for r in result.rules] == [BURST, QWD, SLA, MEM, LAD]  # the labels' order
    assert result.macro_f1 == pytest.approx(7 / 15)


def test_per_trace_outcomes_in_labels_order(result):
    got = [(t.id, t.status, t.true_positives, t.false_negatives, t.false_positives) for t in result.traces]
    assert got == [
        ("s0-healthy", "ok", (), (), ()),
        ("s0-legit", "ok", (), (), ()),
        ("s0-burst", "ok", (BURST,), (), ()),
        ("s0-qwd-wrong", "miss", (), (SLA,), (QWD,)),
        ("s1-healthy-alarm", "false-positive", (), (), (MEM,)),
        ("s1-mem", "ok", (MEM,), (), ()),
        ("s1-sla-allowed", "miss", (), (SLA,), ()),
        ("s2-healthy", "ok", (), (), ()),
        ("s2-burst-missing", "error", (), (BURST,), ()),
    ]
    allowed = result.traces[6]
    assert [r.id for r in allowed.reported] == [QWD]  # reported but allowed: neither tp nor fp
    missing = result.traces[8]
    assert "missing.parquet" in missing.error and missing.indices == Indices()
    burst = result.traces[2]
    assert burst.reported[0].severity in ("medium", "high", "critical") and 0 < burst.reported[0].score <= 1
    assert burst.indices.CI is not None and burst.seed == 0 and burst.path == "traces/burst-amplification.parquet"
    assert result.counts == {"traces": 9, "controls": 4, "ok": 5, "miss": 2, "false_positive": 1, "error": 1}


def test_confusion_and_control_false_alarm(result):
    assert result.confusion == (ConfusionEntry(expected=SLA, reported=QWD, instead=2, also=0),)
    assert [(a.trace, a.scenario, a.seed, [r.id for r in a.reported]) for a in result.control_false_alarms] == [
        ("s1-healthy-alarm", "healthy", 1, [MEM])
    ]
    assert result.unknown_rule_ids == ()


def test_index_direction_checks(result):
    got = {(c.seed, c.index, c.higher_scenario, c.lower_scenario): c.status for c in result.direction_checks}
    assert got == {
        # seed 0: every degraded scenario below healthy on CI; the labelled scenario is what counts
        (0, "CI", "healthy", BURST): "pass",
        (0, "CI", "healthy", QWD): "pass",
        (0, "DI", QWD, "healthy"): "pass",
        (0, "DI", BURST, "healthy"): "pass",
        (0, "HCL", MEM, "healthy"): "skipped",
        (0, "HCL", SLA, "healthy"): "skipped",
        (0, "WPI", BURST, "legitimate-queueing"): "pass",
        # seed 1: `healthy` is the memory trace itself: equal is not above
        (1, "CI", "healthy", MEM): "fail",
        (1, "CI", "healthy", SLA): "fail",
        (1, "DI", QWD, "healthy"): "skipped",
        (1, "DI", BURST, "healthy"): "skipped",
        (1, "HCL", MEM, "healthy"): "fail",
        (1, "HCL", SLA, "healthy"): "pass",
        (1, "WPI", BURST, "legitimate-queueing"): "skipped",
        # seed 2: the burst trace failed to analyze: its null index fails the check
        (2, "CI", "healthy", BURST): "fail",
        (2, "DI", QWD, "healthy"): "skipped",
        (2, "DI", BURST, "healthy"): "fail",
        (2, "HCL", MEM, "healthy"): "skipped",
        (2, "HCL", SLA, "healthy"): "skipped",
        (2, "WPI", BURST, "legitimate-queueing"): "skipped",
    }
    assert len(got) == len(result.direction_checks)
    null = next(c for c in result.direction_checks if c.seed == 2 and c.index == "CI")
    assert null.lower_value is None and "failed to analyze" in null.message
    equal = next(c for c in result.direction_checks if c.seed == 1 and c.index == "HCL" and c.higher_scenario == MEM)
    assert equal.higher_value == equal.lower_value and "not above" in equal.message
    skipped = next(c for c in result.direction_checks if c.seed == 0 and c.index == "HCL" and c.higher_scenario == MEM)
    assert skipped.higher_trace is None and f"no {MEM} trace at seed 0" in skipped.message
    assert result.direction_counts == {"pass": 6, "fail": 5, "skipped": 9}


def test_one_job_and_two_jobs_give_the_same_result(suite, result):
    assert render_json(score_suite(suite, jobs=1)) == render_json(result)


def test_accuracy_gate(result):
    low = accuracy_gate(result, 0.4)  # macro-F1 7/15 is enough; the control alarm is not
    assert not low.passed and len(low.failures) == 1 and "s1-healthy-alarm" in low.failures[0]
    high = accuracy_gate(result, 0.5)
    assert not high.passed and high.failures[0] == "macro-F1 0.467 is below 0.5"


# ---------------------------------------------------------------- the scoring rule on hand-made outcomes


def _finding(rule: str, severity: str, score: float = 0.5, kind: str = "pattern", mode: str | None = None) -> Finding:
    return Finding(rule, kind, mode, "AI.04", (), severity, score, "", {})  # type: ignore[arg-type]


def _labels(*traces: LabelledTrace, rule_ids=("a", "b")) -> Labels:
    from pathlib import Path

    return Labels(source="labels.json", root=Path("."), rule_ids=tuple(rule_ids), controls=("healthy",), traces=traces)


def _trace(id: str, expected=(), allowed=(), control=False, scenario="s", seed=0) -> LabelledTrace:
    return LabelledTrace(id, scenario, f"{id}.parquet", tuple(expected), tuple(allowed), control, seed)


def test_reported_rules_counts_medium_and_up_and_modes_by_mode():
    findings = [
        _finding("a", "low", 0.9),  # below medium: not a report
        _finding("b", "medium", 0.3),
        _finding("b", "high", 0.6),
        _finding("custom-drift", "critical", 0.8, kind="mode", mode="latency-asymmetry-drift"),
    ]
    assert reported_rules(findings) == (
        ReportedRule("custom-drift", "critical", 0.8),
        ReportedRule("latency-asymmetry-drift", "critical", 0.8),  # kind == mode and mode == id
        ReportedRule("b", "high", 0.6),  # the strongest finding of the id
    )


def test_precision_is_1_without_reports_and_recall_1_without_expectations():
    labels = _labels(_trace("t1", expected=["a"]), _trace("t2"))
    outcomes = [TraceOutcome((), Indices()), TraceOutcome((), Indices())]
    scores = {r.rule: r for r in score_outcomes(labels, outcomes).rules}
    assert (scores["a"].precision, scores["a"].recall, scores["a"].f1) == (1.0, 0.0, 0.0)
    assert (scores["b"].precision, scores["b"].recall, scores["b"].f1) == (1.0, 1.0, 1.0)


def test_a_false_positive_outside_the_rule_ids_is_listed_but_not_scored():
    labels = _labels(_trace("t1", expected=["a"]))
    outcome = TraceOutcome((ReportedRule("a", "high", 0.9), ReportedRule("other", "medium", 0.5)), Indices())
    result = score_outcomes(labels, [outcome])
    assert result.traces[0].false_positives == ("other",) and result.traces[0].status == "false-positive"
    assert [(r.tp, r.fp, r.fn) for r in result.rules] == [(1, 0, 0), (0, 0, 0)]
    assert result.macro_f1 == 1.0
    assert result.confusion == (ConfusionEntry("a", "other", instead=0, also=1),)


def test_outcomes_must_match_the_labels():
    with pytest.raises(ValueError):
        score_outcomes(_labels(_trace("t1")), [])


def test_direction_rules_name_scenarios_of_the_taxonomy():
    scenarios = set(MODES) | set(PATTERNS) | set(BASELINES)
    for rule in DIRECTION_RULES:
        assert rule.higher in scenarios
        assert rule.lower in scenarios or rule.lower == EACH_DEGRADED
