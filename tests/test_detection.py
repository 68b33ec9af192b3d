"""The detection suite (issue 3 acceptance): every scenario x 5 seeds, with naming, time origin,
row order, container and optional columns varied. Each scenario's own rule fires at >= medium,
the baselines produce no finding >= medium, and macro-F1 over the rules is >= 0.95.
The same runs produce docs/detection.md (`make detection`)."""

from __future__ import annotations

import pytest

from benchmarks.detection import baseline_false_alarms, macro_f1, run_suite, scores
from coherence_diag.rules.loader import load_rules
from coherence_diag.simulate import SCENARIOS
from coherence_diag.taxonomy import MODES, PATTERNS

SEEDS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def runs():
    return run_suite(SEEDS)


def test_every_mode_and_pattern_has_its_shipped_rule():
    ids = {r.id for r in load_rules()}
    assert set(MODES) | set(PATTERNS) <= ids


def test_each_scenario_fires_its_own_rule(runs):
    missed = [
        (r.scenario, r.seed, r.variant, sorted(r.fired))
        for r in runs
        if SCENARIOS[r.scenario].expected_rule and SCENARIOS[r.scenario].expected_rule not in r.fired
    ]
    assert not missed, missed


def test_baselines_produce_no_finding_of_medium_or_more(runs):
    alarms = [(r.scenario, r.seed, r.variant, sorted(r.fired)) for r in baseline_false_alarms(runs)]
    assert not alarms, alarms


def test_macro_f1(runs):
    table = scores(runs)
    assert macro_f1(table) >= 0.95, {k: round(v["f1"], 2) for k, v in table.items() if v["f1"] < 1}
