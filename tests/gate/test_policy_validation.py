"""Policy files are data: invalid ones are rejected with exit 2, naming file, check and problem;
every problem is reported at once; nothing in a policy is ever run."""

from __future__ import annotations

import pytest

from coherence_diag.errors import RuleError
from coherence_diag.gate import load_policy
from tests.conftest import file_digest
from tests.gate.conftest import POLICIES, SAMPLES, write_policy

GOOD = """\
policy: 1
name: test-policy
description: a policy for tests
checks:
  - id: coherence
    measure: CI
    min: 0.5
  - id: p99
    measure: latency_ms.p99
    max: 30000
  - id: findings
    findings: {max_severity: low, rules: [burst-amplification], domains: [AI.27], kinds: [pattern]}
  - id: regress
    regression: {measures: [CI, latency_ms.p99], max_relative: 0.1}
"""


def test_good_policy_loads(tmp_path, run_cli):
    path = write_policy(tmp_path, GOOD)
    policy = load_policy(path)
    assert [c.id for c in policy.checks] == ["coherence", "p99", "findings", "regress"]
    assert policy.needs_baseline
    result = run_cli("policy", "check", path)
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout and "4 checks" in result.stdout


@pytest.mark.parametrize("name", ["serving-default.yaml", "regression.yaml"])
def test_shipped_policies_are_valid(run_cli, name):
    assert run_cli("policy", "check", POLICIES / name).exit_code == 0


@pytest.mark.parametrize(
    "change, fragments",
    [
        (("policy: 1", "policy: 2"), ["unsupported policy version 2"]),
        (("policy: 1", "policy: true"), ["unsupported policy version True"]),
        (("policy: 1\n", ""), ["missing 'policy: 1'"]),
        (("name: test-policy", "nmae: test-policy"), ["unknown top-level key 'nmae'", "did you mean 'name'"]),
        (("measure: CI", "measure: CJ"), ["check 'coherence'", "unknown measure 'CJ'", "did you mean 'CI'"]),
        (("latency_ms.p99", "latency.p99"), ["check 'p99'", "unknown measure 'latency.p99'", "'latency_ms.p99'"]),
        (("min: 0.5", "min: '0.5'"), ["check 'coherence'", "min must be a finite number"]),
        (("min: 0.5", "min: .nan"), ["check 'coherence'", "min must be a finite number"]),
        (("min: 0.5", "min: .inf"), ["check 'coherence'", "min must be a finite number"]),
        (("min: 0.5", "min: true"), ["check 'coherence'", "min must be a finite number, got True"]),
        (("min: 0.5", "min: \"__import__('os').system('touch pwned')\""), ["check 'coherence'", "min must be a finite number", "__import__"]),
        (("min: 0.5", "min: 1.5"), ["check 'coherence'", "outside [0, 1]"]),
        (("min: 0.5", "min: 0.5\n    max: 0.2"), ["check 'coherence'", "min 0.5 is greater than max 0.2"]),
        (("max: 30000", "max: -5"), ["check 'p99'", "negative", "ms"]),
        (("    min: 0.5\n", ""), ["check 'coherence'", "needs 'min', 'max' or both"]),
        (("    min: 0.5\n", "    min: 0.5\n    mni: 0.3\n"), ["check 'coherence'", "unknown key 'mni'", "did you mean 'min'"]),
        (("max_severity: low", "max_severity: severe"), ["check 'findings'", "max_severity must be one of none, low, medium, high, critical"]),
        (("rules: [burst-amplification]", "rules: [burst-amplificaton]"), ["check 'findings'", "unknown rule 'burst-amplificaton'", "'burst-amplification'"]),
        (("domains: [AI.27]", "domains: [AI.99]"), ["check 'findings'", "unknown domain 'AI.99'"]),
        (("kinds: [pattern]", "kinds: [hunch]"), ["check 'findings'", "unknown kind 'hunch'"]),
        (("max_relative: 0.1", "max_relative: -0.1"), ["check 'regress'", "max_relative must be a finite number >= 0"]),
        (("measures: [CI, latency_ms.p99]", "measures: [CI, p99]"), ["check 'regress'", "unknown measure 'p99'"]),
        (("measures: [CI, latency_ms.p99]", "measures: []"), ["check 'regress'", "at least one measure"]),
        (("id: p99", "id: coherence"), ["check 'coherence': duplicate check id"]),
        (("id: p99", "id: P99!"), ["check #2", "'id' must be lower-case"]),
        (("    measure: CI\n", "    measure: CI\n    findings: {}\n"), ["check 'coherence'", "needs exactly one of measure, findings, regression"]),
        (("  - id: coherence\n    measure: CI\n    min: 0.5\n", "  - just text\n"), ["check #1", "expected a mapping"]),
        (("    min: 0.5\n", "    min: 0.5\n    if_missing: ignore\n"), ["check 'coherence'", "if_missing must be one of fail, skip"]),
        (("name: test-policy", "name: test-policy\nrun: rm -rf /"), ["unknown top-level key 'run'"]),
        (("max_relative: 0.1", "max_relative: 0.1, if_no_baseline: maybe"), ["check 'regress'", "if_no_baseline must be one of fail, skip"]),
        (("name: test-policy\n", "name: test-policy\n!!python/object/apply:os.system ['touch pwned']\n"), ["not valid YAML"]),
    ],
)
def test_invalid_policy_exits_2_naming_the_problem(tmp_path, run_cli, change, fragments, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were anything in the policy ever run, `pwned` would appear here
    old, new = change
    assert old in GOOD
    path = write_policy(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RuleError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    result = run_cli("policy", "check", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "must be a mapping"),
        ("- a\n- b\n", "must be a mapping"),
        ("policy: 1\nname: x\nchecks: []\n", "'checks' must be a non-empty list"),
        ("policy: 1\nchecks: [{id: a, measure: CI, min: 0.1}]\n", "'name' must be non-empty text"),
        ("policy: [1\n", "not valid YAML"),
    ],
)
def test_malformed_policy_files(tmp_path, run_cli, text, fragment):
    path = write_policy(tmp_path, text)
    result = run_cli("policy", "check", path)
    assert result.exit_code == 2
    assert fragment in result.stderr and str(path.name) in result.stderr


def test_every_problem_is_reported_at_once(tmp_path):
    bad = GOOD.replace("measure: CI", "measure: CJ").replace("max: 30000", "max: -1").replace("policy: 1", "policy: 9")
    with pytest.raises(RuleError) as info:
        load_policy(write_policy(tmp_path, bad))
    message = str(info.value)
    assert "3 problems" in message
    for fragment in ("unknown measure 'CJ'", "negative", "unsupported policy version 9"):
        assert fragment in message


def test_missing_or_unreadable_policy(tmp_path, run_cli):
    assert run_cli("policy", "check", tmp_path / "nope.yaml").exit_code == 2
    assert "not found" in run_cli("policy", "check", tmp_path / "nope.yaml").stderr
    assert run_cli("policy", "check", tmp_path).exit_code == 2
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00policy")
    assert "not UTF-8" in run_cli("policy", "check", binary).stderr


def test_user_rules_extend_known_rule_ids(tmp_path, run_cli):
    rules = tmp_path / "rules"
    rules.mkdir()
    source = (SAMPLES.parent / "tests" / "rules" / "test_rule_files.py").read_text()
    rule_yaml = source.split('GOOD = """', 1)[1].split('"""', 1)[0]
    (rules / "my-rule.yaml").write_text(rule_yaml)
    path = write_policy(tmp_path, GOOD.replace("rules: [burst-amplification]", "rules: [my-rule]"))
    assert run_cli("policy", "check", path).exit_code == 2
    assert run_cli("policy", "check", path, "--rules", rules).exit_code == 0


def test_bad_policy_is_rejected_before_the_trace_is_read(tmp_path, run_cli):
    """A bad policy gives exit 2 even with a trace that does not exist, and writes nothing."""
    path = write_policy(tmp_path, GOOD.replace("measure: CI", "measure: CJ"))
    out, junit = tmp_path / "out.json", tmp_path / "gate.xml"
    before = file_digest(path)
    result = run_cli("gate", tmp_path / "missing.parquet", "--policy", path, "--format", "json", "-o", out, "--junit", junit)
    assert result.exit_code == 2
    assert "unknown measure 'CJ'" in result.stderr and "missing.parquet" not in result.stderr
    assert not out.exists() and not junit.exists()
    assert file_digest(path) == before


def test_docs_list_every_measure():
    from coherence_diag.measures import MEASURES

    text = (POLICIES.parent / "docs" / "gate.md").read_text()
    assert not [name for name in MEASURES if f"`{name}`" not in text]


def test_regression_needs_measures_with_a_better_direction(monkeypatch):
    import dataclasses

    from coherence_diag import measures
    from coherence_diag.gate import parse_policy

    context = dataclasses.replace(measures.MEASURES["nominal_utilization"], better="neither")
    monkeypatch.setitem(measures.MEASURES, "nominal_utilization", context)
    spec = {"measures": ["nominal_utilization", "CI"], "max_relative": 0.1}
    with pytest.raises(RuleError, match="'nominal_utilization' is context with no better direction"):
        parse_policy({"policy": 1, "name": "n", "checks": [{"id": "r", "regression": spec}]}, "p.yaml", frozenset())
