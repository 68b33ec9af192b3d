"""Gate outputs: JSON (schema, determinism), JUnit XML, Markdown (escaping), terminal."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from rich.console import Console

from coherence_diag.gate import evaluate, parse_policy
from coherence_diag.model import Finding, Indices, Metrics, Quantiles, Report, TraceFacts
from coherence_diag.render import gate as render_gate

HOSTILE = "<img src=x onerror=alert(1)>|**pool**[link](http://evil)`code`'q'\n# heading\x07"


def _hostile_report() -> Report:
    finding = Finding(
        rule="burst-amplification", kind="pattern", mode=None, domain="AI.27", supporting_domains=(),
        severity="high", score=0.7, summary=f"bursts on pool {HOSTILE} in env {HOSTILE}", evidence={},
    )
    return Report(
        trace=TraceFacts(path=f"traces/{HOSTILE}.parquet", rows=10, layers={}, envs=(HOSTILE,), start=None, end=None, requests=1),
        metrics=Metrics(latency_ms=Quantiles(10.0, 20.0, 30.0), timeout_rate=0.0),
        indices=Indices(CI=0.9, DI=0.1, WPI=None, HCL=0.0),
        findings=(finding,),
        evaluability={},
        window_s=1.0,
        tool_version="test",
    )


def _policy():
    return parse_policy(
        {
            "policy": 1,
            "name": "outputs",
            "checks": [
                {"id": "coherence", "measure": "CI", "min": 0.95},
                {"id": "p99", "measure": "latency_ms.p99", "max": 100},
                {"id": "waves", "measure": "WPI", "max": 0.3, "if_missing": "skip"},
                {"id": "findings", "findings": {"max_severity": "low"}},
                {"id": "regress", "regression": {"measures": ["CI"], "max_relative": 0.1}},
            ],
        },
        "outputs.yaml",
        frozenset({"burst-amplification"}),
    )


@pytest.fixture
def hostile_result():
    return evaluate(_policy(), _hostile_report())


def test_result_shape(hostile_result):
    assert [(c.id, c.status) for c in hostile_result.checks] == [
        ("coherence", "fail"), ("p99", "pass"), ("waves", "skipped"), ("findings", "fail"), ("regress", "skipped"),
    ]
    assert hostile_result.counts == {"pass": 1, "fail": 2, "skipped": 2}


def test_markdown_escapes_trace_strings(hostile_result):
    text = render_gate.render_markdown(hostile_result)
    assert "❌ FAIL" in text
    assert "<img" not in text and "&lt;img" in text
    assert "**pool**" not in text and "[link](" not in text and "`code`" not in text
    assert "'q'" in text and "&\\#" not in text  # quotes stay plain: no entity whose '#' gets escaped
    for line in text.splitlines():
        assert not line.startswith("# heading")  # a newline in a summary cannot start a heading
        if line.startswith("| ") and "burst-amplification" in line and "AI.27" in line:
            # the findings table row keeps its 6 columns: every '|' inside a cell is escaped
            assert line.replace("\\|", "").count("|") == 7


def test_junit_one_testcase_per_check(hostile_result):
    xml_text = render_gate.render_junit(hostile_result)
    root = ET.fromstring(xml_text.encode("utf-8"))
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [c.id for c in hostile_result.checks]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "2")
    by_name = {c.get("name"): c for c in cases}
    failure = by_name["coherence"].find("failure")
    assert "0.9" in failure.get("message") and ">= 0.95" in failure.get("message")
    findings = by_name["findings"].find("failure").get("message")
    assert "burst-amplification (high)" in findings and HOSTILE.splitlines()[0] in findings
    assert by_name["waves"].find("skipped").get("message").startswith("not evaluable")
    assert by_name["p99"].find("failure") is None and by_name["p99"].find("skipped") is None


def test_json_validates_and_is_deterministic(hostile_result):
    text = render_gate.render_json(hostile_result)
    data = json.loads(text)
    jsonschema.validate(data, render_gate.schema())
    assert data["passed"] is False and data["counts"]["fail"] == 2
    assert [c["id"] for c in data["checks"]] == ["coherence", "p99", "waves", "findings", "regress"]
    assert render_gate.render_json(evaluate(_policy(), _hostile_report())) == text


def test_terminal_shows_table_and_verdict(hostile_result):
    console = Console(record=True, width=160, force_terminal=False)
    render_gate.render_terminal(hostile_result, console)
    text = console.export_text()
    assert "gate FAIL: policy outputs: 1 passed, 2 failed, 2 skipped" in text
    for check in hostile_result.checks:
        assert check.id in text
    assert "[link](http://evil)" in text  # shown literally, not taken as Rich markup
