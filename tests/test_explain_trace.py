"""`explain RULE --trace TRACE` and `analyze --features`: a rule's verdict on one trace, laid out."""

from __future__ import annotations

import json

import jsonschema
import pytest

from coherence_diag.analysis import Analysis, analyze
from coherence_diag.features import FEATURES
from coherence_diag.render.json_report import schema
from tests.conftest import REPO

SAMPLE = REPO / "sample_traces" / "burst-amplification.parquet"


@pytest.fixture(scope="module")
def burst() -> Analysis:
    return analyze(SAMPLE)


def test_explain_agrees_with_the_findings_of_the_analysis(burst):
    findings = {f.rule: f for f in burst.report.findings}
    assert "burst-amplification" in findings
    for rule in burst.rules:
        e = burst.explain(rule.id)
        assert e.evaluability == burst.report.evaluability[rule.id], rule.id
        finding = findings.get(rule.id)
        assert (e.verdict == "fired") is (finding is not None), rule.id
        if finding is not None:
            assert (e.severity, e.final_score, e.confidence) == (finding.severity, finding.score, finding.confidence)
            assert e.estimated_inputs == finding.estimated_inputs
        if not e.evaluability.evaluated:
            assert e.verdict == "not-evaluable" and e.verdict_text.startswith("not evaluable")


def test_explain_terminal(run_cli):
    result = run_cli("explain", "burst-amplification", "--trace", SAMPLE, "--no-progress")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for fragment in ("physics", "condition (signature): held", "burst_backlog_ratio >= 2", "burst_backlog_ratio = 3.842",
                     "score:", "corroborating signals", "fired at severity critical", "undefined features"):
        assert fragment in out, fragment


def test_explain_json_is_deterministic_and_complete(run_cli, burst):
    first = run_cli("explain", "burst-amplification", "--trace", SAMPLE, "--format", "json")
    second = run_cli("explain", "burst-amplification", "--trace", SAMPLE, "--format", "json")
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    data = json.loads(first.stdout)
    finding = next(f for f in burst.report.findings if f.rule == "burst-amplification")
    assert data["verdict"] == "fired" and data["score"]["severity"] == finding.severity
    assert data["trace"] == str(SAMPLE)
    assert data["condition"]["held"] is True and data["condition"]["clauses"]["op"] == "and"
    clauses = data["condition"]["clauses"]["parts"]
    assert [c.get("clause") for c in clauses][:2] == ["burst_episodes >= 1", "burst_time_frac <= 0.2"]
    assert [c.get("op") for c in clauses if "clause" not in c] == ["or", "or"]  # cost shown; fresh arrivals carry it
    assert all(c["held"] is True for c in clauses)
    assert clauses[1]["features"]["burst_time_frac"] == round(clauses[1]["features"]["burst_time_frac"], 6)
    assert [s["measured"] for s in data["corroboration"]] == [True, True]
    assert data["score"]["combine"] == "sum" and len(data["score"]["terms"]) == 3
    assert set(data) >= {"physics", "evaluability", "undefined", "estimated_inputs", "confidence"}


def test_explain_not_evaluable_lists_undefined_features_and_why(run_cli):
    result = run_cli("explain", "migration-reconfiguration-risk", "--trace", SAMPLE, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "not-evaluable" and data["condition"]["held"] is None
    signature = [u for u in data["undefined"] if u["role"] == "signature"]
    assert signature and all(u.get("reason") or u.get("missing") for u in signature)


def test_explain_unknown_rule_exits_2_listing_the_rules(run_cli):
    result = run_cli("explain", "no-such-rule", "--trace", SAMPLE)
    assert result.exit_code == 2
    assert "unknown rule 'no-such-rule'" in result.stderr and "burst-amplification" in result.stderr
    result = run_cli("explain", "WPI", "--trace", SAMPLE)  # an index has no verdict on a trace
    assert result.exit_code == 2 and "known rules" in result.stderr
    result = run_cli("explain", "burst-amplification", "--format", "json")
    assert result.exit_code == 2 and "--trace" in result.stderr


def test_explain_with_a_user_rule(run_cli, tmp_path):
    from tests.rules.test_rule_files import GOOD

    d = tmp_path / "rules"
    d.mkdir()
    (d / "my-rule.yaml").write_text(GOOD)
    result = run_cli("explain", "my-rule", "--trace", SAMPLE, "--rules", d, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rule"] == "my-rule" and data["condition"]["clauses"]["clause"] == "tail_ratio > 1"


def test_analyze_features_json(run_cli, trace_file):
    plain = run_cli("analyze", trace_file, "--format", "json")
    with_features = run_cli("analyze", trace_file, "--format", "json", "--features")
    assert plain.exit_code == 0 and with_features.exit_code == 0, with_features.output
    base, report = json.loads(plain.stdout), json.loads(with_features.stdout)
    assert "features" not in base
    jsonschema.validate(report, schema())
    features = report.pop("features")
    assert report == base  # the flag only adds the features
    assert set(features) == set(FEATURES)
    for name, entry in features.items():
        assert entry["unit"] == FEATURES[name].unit
        if entry["value"] is None:
            assert ("missing" in entry) != ("reason" in entry), (name, entry)
        else:
            assert set(entry) == {"value", "unit"} and entry["value"] == round(entry["value"], 6)
    assert any(e["value"] is None for e in features.values()) and any(e["value"] is not None for e in features.values())


def test_analyze_features_terminal(run_cli, trace_file):
    result = run_cli("analyze", trace_file, "--features")
    assert result.exit_code == 0, result.output
    assert "features (docs/features.md)" in result.stdout and "tail_ratio" in result.stdout
    assert "features (docs/features.md)" not in run_cli("analyze", trace_file).stdout


def test_explain_writes_to_output_what_it_prints(run_cli, tmp_path):
    printed = run_cli("explain", "burst-amplification", "--trace", SAMPLE, "--format", "json")
    out = tmp_path / "explain.json"
    written = run_cli("explain", "burst-amplification", "--trace", SAMPLE, "--format", "json", "-o", out)
    assert written.exit_code == 0, written.output
    assert written.stdout == "" and out.read_text() == printed.stdout
    doc = tmp_path / "rule.txt"
    assert run_cli("explain", "slot-locking", "--output", doc).exit_code == 0
    assert doc.read_text() == run_cli("explain", "slot-locking").stdout


def test_explain_refuses_to_write_over_its_trace(run_cli, tmp_path):
    trace = tmp_path / "t.parquet"
    trace.write_bytes(SAMPLE.read_bytes())
    result = run_cli("explain", "burst-amplification", "--trace", trace, "-o", trace)
    assert result.exit_code == 2 and "refusing to write" in result.stderr
    assert trace.read_bytes() == SAMPLE.read_bytes()
