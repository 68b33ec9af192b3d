"""Every shipped rule has YAML test cases (tests/rules/cases/<rule>.yaml), run here.

A case simulates a small trace and states what the rule must (or must not) find:

    rule: queue-wait-dominance
    cases:
      - name: fires on its own scenario
        trace: {scenario: queue-wait-dominance, seed: 11, duration_s: 180}
        expect: {min_severity: medium}
      - name: quiet on healthy
        trace: {scenario: healthy, seed: 11, duration_s: 180}
        expect: {max_severity: null}      # null: the rule must not fire at all
      - name: fires on a fixture of a foreign source (converted in memory)
        from: {source: alibaba-gentd26, path: tests/fixtures/alibaba_gentd26}
        expect: {min_severity: high}
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coherence_diag.model import SEVERITIES
from coherence_diag.rules.loader import load_rules
from tests.rules.harness import analyzed, converted

CASES_DIR = Path(__file__).parent / "cases"
RULES = {r.id: r for r in load_rules()}
RANK = {s: i for i, s in enumerate(SEVERITIES)}


def _cases():
    for path in sorted(CASES_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        for case in spec["cases"]:
            yield pytest.param(spec["rule"], case, id=f"{spec['rule']}: {case['name']}")


def test_every_rule_has_positive_and_negative_cases():
    for rule_id in RULES:
        path = CASES_DIR / f"{rule_id}.yaml"
        assert path.exists(), f"rule {rule_id} has no test cases ({path})"
        cases = yaml.safe_load(path.read_text())["cases"]
        assert any("min_severity" in c["expect"] for c in cases), f"{rule_id}: no case where it must fire"
        assert any("max_severity" in c["expect"] for c in cases), f"{rule_id}: no case where it must stay quiet"


@pytest.mark.parametrize("rule_id, case", list(_cases()))
def test_rule_case(rule_id, case):
    assert rule_id in RULES, f"case file for unknown rule {rule_id}"
    if "from" in case:  # {source, path}: a fixture of a convert source
        result = converted(case["from"]["source"], case["from"]["path"])
    else:
        t = case["trace"]
        result = analyzed(t["scenario"], t.get("seed", 0), t.get("duration_s"), t.get("naming", "plain"))
    found = [f for f in result.report.findings if f.rule == rule_id]
    severity = found[0].severity if found else None
    expect = case["expect"]
    if "min_severity" in expect:
        assert severity is not None and RANK[severity] >= RANK[expect["min_severity"]], (
            f"{rule_id} expected >= {expect['min_severity']}, got {severity}; evidence: "
            f"{found[0].evidence if found else result.report.evaluability.get(rule_id)}"
        )
    if "max_severity" in expect:
        limit = expect["max_severity"]
        if limit is None:
            assert severity is None, f"{rule_id} fired ({severity}): {found[0].summary}"
        else:
            assert severity is None or RANK[severity] <= RANK[limit], f"{rule_id} fired {severity}: {found[0].summary}"
