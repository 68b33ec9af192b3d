"""`coherence-diag gate` through the CLI: exit codes 0 pass, 1 fail, 2 bad input; outputs."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import jsonschema

from coherence_diag.render.gate import schema
from tests.conftest import file_digest
from tests.gate.conftest import POLICIES, SAMPLES

DEFAULT = POLICIES / "serving-default.yaml"
REGRESSION = POLICIES / "regression.yaml"
HEALTHY = SAMPLES / "healthy.parquet"
BURST = SAMPLES / "burst-amplification.parquet"


def test_pass_exits_0(run_cli):
    result = run_cli("gate", HEALTHY, "--policy", DEFAULT)
    assert result.exit_code == 0, result.output
    assert "gate PASS" in result.stdout


def test_fail_exits_1_and_writes_every_output(run_cli, tmp_path):
    out, junit = tmp_path / "gate.json", tmp_path / "gate.xml"
    result = run_cli("gate", BURST, "--policy", DEFAULT, "--format", "json", "--output", out, "--junit", junit)
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    jsonschema.validate(data, schema())
    assert data["passed"] is False
    assert "burst-amplification" in {f["rule"] for c in data["checks"] for f in c["findings"]}
    cases = ET.parse(junit).getroot().findall("testsuite/testcase")
    assert len(cases) == len(data["checks"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.json", "gate.xml"]  # no temp files left


def test_json_to_stdout_is_deterministic(run_cli):
    first = run_cli("gate", BURST, "--policy", DEFAULT, "--format", "json")
    second = run_cli("gate", BURST, "--policy", DEFAULT, "--format", "json")
    assert first.exit_code == second.exit_code == 1
    assert first.stdout == second.stdout


def test_markdown_summary(run_cli):
    result = run_cli("gate", BURST, "--policy", DEFAULT, "--format", "markdown")
    assert result.exit_code == 1
    assert result.stdout.startswith("## coherence-diag gate: ❌ FAIL")
    assert "### Failing findings" in result.stdout and "burst-amplification" in result.stdout


def test_hostile_trace_file_name_is_escaped_in_markdown(run_cli, tmp_path):
    hostile = tmp_path / "<img src=x>|(y)__b__`c`.parquet"  # no glob characters: ingest reads them as a glob
    shutil.copy(HEALTHY, hostile)
    result = run_cli("gate", hostile, "--policy", DEFAULT, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "<img" not in result.stdout and "__b__" not in result.stdout and "`c`" not in result.stdout
    assert "&lt;img src=x&gt;\\|\\(y\\)\\_\\_b\\_\\_\\`c\\`.parquet" in result.stdout


def test_terminal_to_file(run_cli, tmp_path):
    out = tmp_path / "gate.txt"
    result = run_cli("gate", BURST, "--policy", DEFAULT, "--output", out)
    assert result.exit_code == 1
    text = out.read_text()
    assert "gate FAIL" in text and "no-finding-above-low" in text and "burst-amplification" in text


def test_regression_with_baseline(run_cli):
    assert run_cli("gate", HEALTHY, "--policy", REGRESSION, "--baseline", HEALTHY).exit_code == 0
    failed = run_cli("gate", BURST, "--policy", REGRESSION, "--baseline", HEALTHY, "--format", "json")
    assert failed.exit_code == 1
    check = {c["id"]: c for c in json.loads(failed.stdout)["checks"]}["no-regression"]
    assert check["status"] == "fail" and any(r["measure"] == "latency_ms.p99" and r["over_limit"] for r in check["regressions"])
    # regression.yaml says if_no_baseline: fail
    assert run_cli("gate", HEALTHY, "--policy", REGRESSION).exit_code == 1


def _expect_bad(run_cli, tmp_path, *args: object, fragment: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    inputs = {p: file_digest(p) for p in (HEALTHY, DEFAULT)}
    result = run_cli("gate", *args, "--format", "json", "--output", out_dir / "gate.json", "--junit", out_dir / "gate.xml")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert "Traceback" not in result.output
    assert list(out_dir.iterdir()) == []  # no output file, no temp file
    assert {p: file_digest(p) for p in inputs} == inputs


def test_bad_trace_exits_2(run_cli, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    _expect_bad(run_cli, tmp_path, bad, "--policy", DEFAULT, fragment="bad.parquet")
    _expect_bad(run_cli, tmp_path, tmp_path / "missing.parquet", "--policy", DEFAULT, fragment="missing.parquet")


def test_bad_baseline_exits_2(run_cli, tmp_path):
    _expect_bad(run_cli, tmp_path, HEALTHY, "--policy", DEFAULT, "--baseline", tmp_path / "nope.parquet", fragment="nope.parquet")


def test_bad_policy_exits_2(run_cli, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("policy: 1\nname: x\nchecks: [{id: a, measure: CI, min: \"__import__('os')\"}]\n")
    _expect_bad(run_cli, tmp_path, HEALTHY, "--policy", policy, fragment="min must be a finite number")
    _expect_bad(run_cli, tmp_path, HEALTHY, "--policy", tmp_path / "none.yaml", fragment="policy file not found")


def test_refuses_to_overwrite_inputs(run_cli, tmp_path):
    trace = tmp_path / "trace.parquet"
    shutil.copy(HEALTHY, trace)
    before = file_digest(trace)
    assert run_cli("gate", trace, "--policy", DEFAULT, "--junit", trace).exit_code == 2
    assert run_cli("gate", trace, "--policy", DEFAULT, "--output", trace).exit_code == 2
    assert file_digest(trace) == before
    policy = tmp_path / "p.yaml"
    shutil.copy(DEFAULT, policy)
    assert run_cli("gate", trace, "--policy", policy, "--junit", policy).exit_code == 2
    same = tmp_path / "same.out"
    assert run_cli("gate", trace, "--policy", policy, "--junit", same, "--output", same).exit_code == 2
    assert not same.exists()


def test_bad_usage_exits_2(run_cli):
    assert run_cli("gate", HEALTHY).exit_code == 2  # --policy is required
    assert run_cli("gate", HEALTHY, "--policy", DEFAULT, "--format", "html").exit_code == 2


def test_missing_output_directory_exits_2_before_writing_anything(run_cli, tmp_path):
    junit = tmp_path / "gate.xml"
    result = run_cli("gate", HEALTHY, "--policy", DEFAULT, "--junit", junit, "--output", tmp_path / "no" / "gate.json")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not junit.exists()
