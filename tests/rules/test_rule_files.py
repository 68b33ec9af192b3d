"""Rule files are data: invalid ones are rejected with exit 2 naming file, rule and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from coherence_diag.errors import RuleError
from coherence_diag.rules.loader import load_rules

GOOD = """
id: my-rule
kind: pattern
mode: null
domain: AI.27
supporting_domains: []
title: A test rule
condition: "tail_ratio > 1.0"
score: "ramp(tail_ratio, 1, 3)"
severity: {low: 0.0, medium: 0.3, high: 0.6, critical: 0.9}
summary: "tail ratio {tail_ratio:.1f}"
evidence: [tail_ratio]
explanation: Tails are long.
next_checks: [Look at the tail.]
"""


def _write(tmp_path: Path, text: str, name: str = "rule.yaml") -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


def test_user_rules_are_loaded_and_fire(tmp_path, run_cli, trace_file):
    d = _write(tmp_path, GOOD)
    assert "my-rule" in {r.id for r in load_rules([d])}
    result = run_cli("analyze", trace_file, "--rules", d, "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"rule": "my-rule"' in result.stdout
    assert run_cli("rules", "list", "--rules", d).exit_code == 0
    assert "my-rule" in run_cli("rules", "list", "--rules", d).stdout
    assert "Tails are long." in run_cli("explain", "my-rule", "--rules", d).stdout


@pytest.mark.parametrize(
    "change, fragments",
    [
        (("condition: \"tail_ratio > 1.0\"", "condition: \"tail_ratio > \""), ["my-rule", "condition", "expected a number"]),
        (("condition: \"tail_ratio > 1.0\"", "condition: \"tail_ration > 1.0\""), ["my-rule", "unknown feature 'tail_ration'"]),
        (("condition: \"tail_ratio > 1.0\"", "condition: \"__import__('os').system('x')\""), ["my-rule", "condition"]),
        (("condition: \"tail_ratio > 1.0\"", "condition: \"open(tail_ratio)\""), ["my-rule", "unknown function 'open'"]),
        (("summary: \"tail ratio {tail_ratio:.1f}\"", "summary: \"{tail_ratio.__class__}\""), ["my-rule", "placeholder"]),
        (("kind: pattern", "kind: hunch"), ["my-rule", "kind must be"]),
        (("domain: AI.27", "domain: AI.99"), ["my-rule", "domain 'AI.99'"]),
        (("severity: {low: 0.0, medium: 0.3, high: 0.6, critical: 0.9}", "severity: {low: 0.5, medium: 0.3}"), ["rise from low"]),
        (("title: A test rule\n", "title: A test rule\nrun: rm -rf /\n"), ["unknown field 'run'"]),
        (("next_checks: [Look at the tail.]", "next_checks: []"), ["next_checks"]),
        (("id: my-rule", "id: latency-asymmetry-drift\nmode_extra: x"), ["unknown field"]),
    ],
)
def test_invalid_rule_files_exit_2(tmp_path, run_cli, trace_file, change, fragments):
    d = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(RuleError):
        load_rules([d])
    result = run_cli("analyze", trace_file, "--rules", d)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert str(d / "rule.yaml") in result.stderr


def test_yaml_syntax_error(tmp_path, run_cli, trace_file):
    d = _write(tmp_path, "id: [unclosed\n")
    result = run_cli("rules", "check", d)
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr and "rule.yaml" in result.stderr


def test_all_problems_of_all_files_are_reported(tmp_path, run_cli):
    d = _write(tmp_path, GOOD.replace("kind: pattern", "kind: x"), "a.yaml")
    _write(tmp_path, GOOD.replace("id: my-rule", "id: other").replace("domain: AI.27", "domain: nope"), "b.yaml")
    result = run_cli("rules", "check", d)
    assert result.exit_code == 2
    assert "2 problems" in result.stderr and "a.yaml" in result.stderr and "b.yaml" in result.stderr


def test_duplicate_rule_id_is_rejected(tmp_path, run_cli):
    d = _write(tmp_path, GOOD.replace("id: my-rule", "id: queue-wait-dominance"))
    result = run_cli("rules", "check", d)
    assert result.exit_code == 2 and "already defined" in result.stderr


def test_missing_rules_directory(tmp_path, run_cli, trace_file):
    result = run_cli("analyze", trace_file, "--rules", tmp_path / "nope")
    assert result.exit_code == 2 and "not a directory" in result.stderr


def test_shipped_rules_cover_every_mode_and_pattern():
    from coherence_diag.taxonomy import MODES, PATTERNS

    ids = {r.id: r for r in load_rules()}
    for mode, (domain, supporting) in MODES.items():
        if mode in ids:  # checked strictly once every rule has shipped (see tests/test_detection.py)
            assert ids[mode].kind == "mode" and ids[mode].domain == domain
            assert ids[mode].supporting_domains == supporting
    for pattern in PATTERNS:
        if pattern in ids:
            assert ids[pattern].kind == "pattern"


@pytest.mark.parametrize(
    "condition, score, accepted",
    [
        ("tail_ratio > 1.0 or timeout_rate > 0.1", "ramp(tail_ratio, 1, 3)", False),  # `or`: tail_ratio may be undefined
        ("coalesce(tail_ratio, 0) > 1.0", "ramp(tail_ratio, 1, 3)", False),
        ("not tail_ratio < 1.0", "ramp(tail_ratio, 1, 3)", False),
        ("tail_ratio > 1.0", "ramp(tail_ratio, 1, 3) + timeout_rate", False),  # a name the condition never reads
        ("tail_ratio > 1.0 or timeout_rate > 0.1", "coalesce(ramp(tail_ratio, 1, 3), 0) + max_of(timeout_rate, 0)", True),
        ("(tail_ratio > 1.0 and timeout_rate > 0) or (tail_ratio > 2 and timeout_rate < 0.5)", "ramp(tail_ratio, 1, 3) * (1 - timeout_rate)", True),
        ("defined(tail_ratio) and tail_ratio > 1.0", "ramp(tail_ratio, 1, 3)", True),
    ],
)
def test_score_may_read_only_guarded_or_null_aware_names(tmp_path, run_cli, condition, score, accepted):
    text = GOOD.replace('condition: "tail_ratio > 1.0"', f'condition: "{condition}"').replace(
        'score: "ramp(tail_ratio, 1, 3)"', f'score: "{score}"'
    )
    result = run_cli("rules", "check", _write(tmp_path, text))
    if accepted:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2, result.output
        assert "my-rule" in result.stderr and "score reads" in result.stderr and "null-aware" in result.stderr


CORROBORATED = GOOD + """corroboration:
  - when: "timeout_rate >= 0.05"
    weight: 0.2
    says: clients time out
physics: Long tails come from somewhere.
"""


@pytest.mark.parametrize(
    "change, fragment",
    [
        *[(("weight: 0.2", f"weight: {bad}"), "weight must be a number in (0, 1]") for bad in ("1.5", "0", "true", "heavy")],
        *[((f"    {field}\n", ""), "expected exactly the fields when, weight, says") for field in ("weight: 0.2", "says: clients time out")],
        (("    says: clients time out\n", "    says: clients time out\n    extra: 1\n"), "expected exactly the fields"),
        (("says: clients time out", "says: ''"), "'says' must be non-empty text"),
        (('when: "timeout_rate >= 0.05"', 'when: "timeout_rate >="'), "corroboration #1: when: expected a number"),
        (('when: "timeout_rate >= 0.05"', 'when: "timeout_rat >= 0.05"'), "unknown feature 'timeout_rat'"),
        (('  - when: "timeout_rate >= 0.05"\n    weight: 0.2\n    says: clients time out\n', "  oops\n"), "must be a list"),
        (("physics: Long tails come from somewhere.", "physics: ''"), "'physics' must be non-empty text"),
    ],
)
def test_invalid_corroboration_is_rejected(tmp_path, run_cli, change, fragment):
    assert change[0] in CORROBORATED
    result = run_cli("rules", "check", _write(tmp_path, CORROBORATED.replace(*change)))
    assert result.exit_code == 2, result.output
    assert "my-rule" in result.stderr and fragment in result.stderr, result.stderr


def test_valid_corroboration_is_loaded(tmp_path):
    (rule,) = [r for r in load_rules([_write(tmp_path, CORROBORATED)]) if r.id == "my-rule"]
    assert rule.physics == "Long tails come from somewhere."
    assert [(c.when.source, c.weight, c.says) for c in rule.corroboration] == [("timeout_rate >= 0.05", 0.2, "clients time out")]
    assert rule.signature_names == {"tail_ratio"}  # corroborating inputs are optional


def test_defers_to_must_name_another_loaded_rule(tmp_path, run_cli):
    unknown = CORROBORATED.replace("physics:", "defers_to: [no-such-rule]\nphysics:", 1)
    result = run_cli("rules", "check", _write(tmp_path, unknown))
    assert result.exit_code == 2
    assert "defers_to names 'no-such-rule', which is not another loaded rule" in result.stderr
    known = CORROBORATED.replace("physics:", "defers_to: [burst-amplification]\nphysics:", 1)
    (rule,) = [r for r in load_rules([_write(tmp_path, known)]) if r.id == "my-rule"]
    assert rule.defers_to == ("burst-amplification",)
