"""Verdicts on the shipped samples: baselines pass the default policy, every degraded sample
fails it, with the failing checks naming the right thing; regression against a baseline."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag.gate import evaluate, parse_policy
from coherence_diag.measures import MEASURES
from tests.gate.conftest import BASELINES, DEGRADED


@pytest.mark.parametrize("entry", BASELINES, ids=lambda e: e["scenario"])
def test_baseline_samples_pass_the_default_policy(entry, sample_report, default_policy):
    result = evaluate(default_policy, sample_report(entry["scenario"]))
    assert result.passed, [c.message for c in result.failed]
    assert result.counts["fail"] == 0


@pytest.mark.parametrize("entry", DEGRADED, ids=lambda e: e["scenario"])
def test_degraded_samples_fail_naming_their_rule(entry, sample_report, default_policy):
    result = evaluate(default_policy, sample_report(entry["scenario"]))
    assert not result.passed
    findings = {c.id: c for c in result.failed}["no-finding-above-low"]
    assert entry["expected_rule"] in {f.rule for f in findings.findings}
    assert entry["expected_rule"] in findings.message
    for check in result.failed:  # every failure says what was measured against what
        assert check.measured and check.threshold and check.message


def test_measure_failure_names_value_and_threshold(sample_report, default_policy):
    result = evaluate(default_policy, sample_report("burst-amplification"))
    failed = {c.id: c for c in result.failed}
    ttft = failed["ttft-p99"]
    assert ttft.value == pytest.approx(sample_report("burst-amplification").metrics.ttft_ms.p99)
    assert ttft.max == 3000 and "3000 ms" in ttft.message and ttft.measured in ttft.message
    assert failed["timeouts"].measure == "timeout_rate"


def test_degraded_against_healthy_fails_the_regression_check(sample_report, regression_policy):
    result = evaluate(regression_policy, sample_report("burst-amplification"), baseline=sample_report("healthy"))
    check = {c.id: c for c in result.checks}["no-regression"]
    assert check.status == "fail"
    over = {i.measure: i for i in check.regressions if i.over_limit}
    assert {"latency_ms.p99", "ttft_ms.p99", "CI"} <= set(over)
    p99 = over["latency_ms.p99"]
    assert p99.base == pytest.approx(sample_report("healthy").metrics.latency_ms.p99)
    assert p99.change == pytest.approx(p99.candidate / p99.base - 1)
    assert "latency_ms.p99" in check.message and "limit 10%" in check.message


def test_healthy_against_itself_passes_the_regression_check(sample_report, regression_policy):
    healthy = sample_report("healthy")
    result = evaluate(regression_policy, healthy, baseline=healthy)
    assert result.passed, [c.message for c in result.failed]
    check = {c.id: c for c in result.checks}["no-regression"]
    assert check.status == "pass" and all(i.change == 0 for i in check.regressions)


def test_regression_without_baseline_follows_if_no_baseline(sample_report):
    text = {"policy": 1, "name": "r", "checks": [{"id": "r", "regression": {"measures": ["CI"], "max_relative": 0.1}}]}
    skipped = evaluate(parse_policy(text, "p.yaml", frozenset()), sample_report("healthy"))
    assert skipped.passed and skipped.checks[0].status == "skipped" and "--baseline" in skipped.checks[0].message
    text["checks"][0]["regression"]["if_no_baseline"] = "fail"
    failed = evaluate(parse_policy(text, "p.yaml", frozenset()), sample_report("healthy"))
    assert not failed.passed and "--baseline" in failed.checks[0].message


def test_null_measure_fails_unless_if_missing_skip(sample_report):
    import dataclasses

    report = sample_report("healthy")
    no_slo = dataclasses.replace(report, metrics=dataclasses.replace(report.metrics, slo_attainment=None))
    check = {"id": "slo", "measure": "slo_attainment", "min": 0.9}
    result = evaluate(parse_policy({"policy": 1, "name": "n", "checks": [check]}, "p", frozenset()), no_slo)
    assert result.checks[0].status == "fail" and result.checks[0].message.startswith("not evaluable")
    skip = evaluate(parse_policy({"policy": 1, "name": "n", "checks": [{**check, "if_missing": "skip"}]}, "p", frozenset()), no_slo)
    assert skip.passed and skip.checks[0].status == "skipped"


def test_findings_filters_and_unevaluable_listed_rule(sample_report):
    report = sample_report("healthy")  # migration-reconfiguration-risk cannot be evaluated on it
    def run(findings: dict, **extra):
        policy = parse_policy({"policy": 1, "name": "n", "checks": [{"id": "f", "findings": findings, **extra}]}, "p", frozenset({"migration-reconfiguration-risk", "burst-amplification"}))
        return evaluate(policy, report).checks[0]

    assert run({"rules": ["burst-amplification"]}).status == "pass"
    gap = run({"rules": ["migration-reconfiguration-risk"]})
    assert gap.status == "fail" and "migration-reconfiguration-risk" in gap.message
    assert run({"rules": ["migration-reconfiguration-risk"]}, if_missing="skip").status == "skipped"
    burst = sample_report("burst-amplification")
    policy = parse_policy({"policy": 1, "name": "n", "checks": [{"id": "f", "findings": {"domains": ["AI.07"]}}]}, "p", frozenset())
    assert evaluate(policy, burst).passed  # burst-amplification is AI.27: out of scope
    policy = parse_policy({"policy": 1, "name": "n", "checks": [{"id": "f", "findings": {"kinds": ["pattern"], "max_severity": "high"}}]}, "p", frozenset())
    assert not evaluate(policy, burst).passed  # its severity is critical


_BOUNDS = st.one_of(st.none(), st.floats(min_value=0, max_value=1, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(lo=_BOUNDS, hi=_BOUNDS, name=st.sampled_from([n for n, m in MEASURES.items() if m.unit in ("frac", "index")]))
def test_min_max_check_passes_iff_value_inside(sample_report, lo, hi, name):
    if lo is None and hi is None or (lo is not None and hi is not None and lo > hi):
        return
    check = {"id": "x", "measure": name, **({"min": lo} if lo is not None else {}), **({"max": hi} if hi is not None else {})}
    report = sample_report("legitimate-queueing")
    result = evaluate(parse_policy({"policy": 1, "name": "n", "checks": [check]}, "p", frozenset()), report)
    value = MEASURES[name].value(report)
    assert value is not None and math.isfinite(value)
    inside = (lo is None or value >= lo) and (hi is None or value <= hi)
    assert result.passed == inside
    assert result.checks[0].status == ("pass" if inside else "fail")


def test_nan_value_never_passes(sample_report):
    import dataclasses

    report = sample_report("healthy")
    nan = dataclasses.replace(report, indices=dataclasses.replace(report.indices, CI=float("nan")))
    policy = parse_policy({"policy": 1, "name": "n", "checks": [{"id": "c", "measure": "CI", "min": 0.5}]}, "p", frozenset())
    check = evaluate(policy, nan).checks[0]
    assert check.status == "fail" and check.message.startswith("not evaluable")


@settings(max_examples=100, deadline=None)
@given(
    factor=st.floats(min_value=0.2, max_value=5.0, allow_nan=False),
    limit=st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
)
def test_regression_fails_iff_worse_than_the_limit(sample_report, factor, limit):
    """p99 latency scaled by `factor` is a regression of factor - 1; CI scaled down by it is 1 - 1/factor."""
    import dataclasses

    base = sample_report("healthy")
    m = base.metrics
    candidate = dataclasses.replace(
        base,
        metrics=dataclasses.replace(m, latency_ms=dataclasses.replace(m.latency_ms, p99=m.latency_ms.p99 * factor)),
        indices=dataclasses.replace(base.indices, CI=base.indices.CI / factor),
    )
    spec = {"measures": ["latency_ms.p99", "CI"], "max_relative": limit}
    policy = parse_policy({"policy": 1, "name": "n", "checks": [{"id": "r", "regression": spec}]}, "p", frozenset())
    check = evaluate(policy, candidate, baseline=base).checks[0]
    changes = {i.measure: i.change for i in check.regressions}
    assert changes["latency_ms.p99"] == pytest.approx(factor - 1)
    assert changes["CI"] == pytest.approx(1 - 1 / factor)
    assert (check.status == "fail") == any(c > limit for c in changes.values())
