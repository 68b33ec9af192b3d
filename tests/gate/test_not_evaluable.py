"""A check the trace cannot evaluate says "not evaluable (needs ...)" in every output.

Its status is what it always was (fail, or skipped with `if_missing: skip`), but no output may
word it like a value outside a bound: the measured value does not exist, nothing was compared.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from coherence_diag.gate import evaluate, parse_policy
from coherence_diag.model import Evaluability, Indices, Metrics, Quantiles, Report, TraceFacts
from coherence_diag.render import gate as render_gate
from tests.gate.conftest import write_policy
from tests.tracegen import TraceSpec, make_trace, write

WPI_REASON = "needs at least two stress series (one layer of timing: e.g. arrivals only)"
LIMIT_WORDING = ("outside", "limit", "above the maximum", "below the minimum")

POLICY = """\
policy: 1
name: waves
checks:
  - id: waves
    measure: WPI
    max: 0.3
  - id: skipped-waves
    measure: WPI
    max: 0.3
    if_missing: skip
"""


@pytest.fixture(scope="module")
def one_pool_trace(tmp_path_factory) -> Path:
    """A trace of arrivals only (one layer of timing, one stress series): WPI is null."""
    frame = make_trace(TraceSpec(n_requests=60, seed=3, network=False))
    frame = frame.filter((pl.col("layer") == "scheduler") & (pl.col("event") == "arrive"))
    path = tmp_path_factory.mktemp("one-pool") / "one-pool.parquet"
    write(frame, path)
    return path


def _no_limit_wording(text: str) -> None:
    for word in LIMIT_WORDING:
        assert word not in text, f"{word!r} in {text!r}"


def test_null_wpi_through_every_output(run_cli, tmp_path, one_pool_trace):
    policy = write_policy(tmp_path, POLICY)
    out, junit = tmp_path / "gate.json", tmp_path / "gate.xml"
    result = run_cli("gate", one_pool_trace, "--policy", policy, "--format", "json", "--output", out, "--junit", junit, "--no-progress")
    assert result.exit_code == 1, result.output  # a null measure still fails unless the check says skip

    data = json.loads(out.read_text())
    jsonschema.validate(data, render_gate.schema())
    waves, skipped = data["checks"]
    assert (waves["status"], skipped["status"]) == ("fail", "skipped")
    for check in (waves, skipped):
        assert check["message"] == f"not evaluable ({WPI_REASON})"
        assert check["evaluated"] is False and check["missing_columns"] == [] and check["value"] is None
        assert check["not_evaluable"] == [f"WPI: {WPI_REASON}"]
        _no_limit_wording(check["message"])

    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    failure = cases["waves"].find("failure")
    assert failure.get("message").startswith(f"not evaluable ({WPI_REASON})")
    assert "not checked" in failure.get("message") and "measured" not in failure.get("message")
    _no_limit_wording(failure.get("message") + failure.text)
    assert cases["skipped-waves"].find("skipped").get("message").startswith("not evaluable (needs at least two stress series")

    markdown = run_cli("gate", one_pool_trace, "--policy", policy, "--format", "markdown", "--no-progress")
    assert markdown.exit_code == 1
    rows = [line for line in markdown.stdout.splitlines() if "| waves |" in line or "| skipped-waves |" in line]
    assert len(rows) == 2
    for row in rows:
        assert "not evaluable \\(needs at least two stress series" in row  # parentheses escaped by the Markdown renderer
        _no_limit_wording(row)

    terminal = run_cli("gate", one_pool_trace, "--policy", policy, "--no-progress")
    assert terminal.exit_code == 1
    # The message column is the last one; a narrow terminal wraps it over several lines.
    messages = " ".join(line.split("│")[-2].strip() for line in terminal.stdout.splitlines() if line.startswith("│"))
    assert messages.count(f"not evaluable ({WPI_REASON})") == 2, messages
    _no_limit_wording(terminal.stdout)


def _report(indices: Indices | None = None, **evaluability: Evaluability) -> Report:
    indices = indices if indices is not None else Indices(CI=0.9, DI=0.1, WPI=None, HCL=None)
    return Report(
        trace=TraceFacts(path="t.parquet", rows=10, layers={}, envs=(), start=None, end=None, requests=1),
        metrics=Metrics(latency_ms=Quantiles(10.0, 20.0, 30.0), slo_attainment=None),
        indices=indices,
        findings=(),
        evaluability=dict(evaluability),
        window_s=1.0,
        tool_version="test",
    )


def _policy(*checks: dict):
    rules = frozenset({"migration-reconfiguration-risk"})
    return parse_policy({"policy": 1, "name": "n", "checks": list(checks)}, "p.yaml", rules)


def test_missing_columns_are_named_in_message_and_json():
    report = _report(
        **{
            "HCL": Evaluability(False, ("slo_ms",), "missing columns"),
            "metrics.slo_attainment": Evaluability(False, ("slo_ms",), "requests carry no latency objective"),
            "migration-reconfiguration-risk": Evaluability(False, ("env", "ttft_slo_ms"), None),
        }
    )
    result = evaluate(
        _policy(
            {"id": "slo", "measure": "slo_attainment", "min": 0.9},
            {"id": "hcl", "measure": "HCL", "max": 0.2},
            {"id": "migration", "findings": {"rules": ["migration-reconfiguration-risk"]}},
            {"id": "p99", "measure": "latency_ms.p99", "max": 10},
        ),
        report,
    )
    slo, hcl, migration, p99 = result.checks
    assert (slo.status, slo.message, slo.missing_columns) == ("fail", "not evaluable (needs column slo_ms)", ("slo_ms",))
    assert hcl.message == "not evaluable (needs column slo_ms)" and not hcl.evaluated
    assert migration.status == "fail" and not migration.evaluated
    assert migration.message == "not evaluable (migration-reconfiguration-risk: needs columns env, ttft_slo_ms)"
    assert migration.missing_columns == ("env", "ttft_slo_ms")
    assert p99.evaluated and p99.missing_columns == ()  # evaluated and outside its bound: worded as such
    assert p99.message == "latency_ms.p99 = 30.0 ms is above the maximum 10 ms"
    data = json.loads(render_gate.render_json(result))
    jsonschema.validate(data, render_gate.schema())
    assert [c["missing_columns"] for c in data["checks"]] == [["slo_ms"], ["slo_ms"], ["env", "ttft_slo_ms"], []]


def test_regression_gaps_name_the_side_and_the_columns():
    candidate = _report(Indices(CI=0.9, DI=0.1, WPI=0.1, HCL=None), HCL=Evaluability(False, ("slo_ms",), "missing columns"))
    baseline = _report(Indices(CI=0.9, DI=0.1, WPI=None, HCL=0.1), WPI=Evaluability(False, (), WPI_REASON))
    regression = {"id": "r", "regression": {"measures": ["HCL", "WPI", "CI"], "max_relative": 0.1}}
    result = evaluate(_policy(regression), candidate, baseline)
    check = result.checks[0]
    assert check.status == "fail" and not check.evaluated  # the default if_missing: fail
    assert check.message == f"not evaluable (HCL: needs column slo_ms; baseline WPI: {WPI_REASON})"
    assert check.missing_columns == ("slo_ms",)
    message = ET.fromstring(render_gate.render_junit(result).encode()).find("testsuite/testcase/failure").get("message")
    assert message.startswith("not evaluable (HCL: needs column slo_ms;") and "not checked" in message
    _no_limit_wording(message)
    judged_on_ci = evaluate(_policy({**regression, "if_missing": "skip"}), candidate, baseline).checks[0]
    assert judged_on_ci.status == "pass" and judged_on_ci.evaluated  # compared on CI: an evaluated verdict
    assert judged_on_ci.not_evaluable == ("HCL: needs column slo_ms", f"baseline WPI: {WPI_REASON}")


def test_existing_schema_documents_without_the_new_fields_still_validate():
    """Extend, never break: a gate document written before `evaluated` and `missing_columns` existed."""
    result = evaluate(_policy({"id": "p99", "measure": "latency_ms.p99", "max": 100}), _report())
    data = json.loads(render_gate.render_json(result))
    for check in data["checks"]:
        del check["evaluated"], check["missing_columns"]
    jsonschema.validate(data, render_gate.schema())
