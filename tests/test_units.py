"""units.py: one formatting of each unit, used by every output (and by the gate's messages)."""

from __future__ import annotations

import pytest

from coherence_diag import units


@pytest.mark.parametrize(
    ("value", "unit", "exact", "display"),
    [
        (812.34, "ms", "812.3 ms", "812 ms"),
        (12.34, "ms", "12.3 ms", "12.3 ms"),
        (15.123, "rps", "15.12 rps", "15.12 rps"),
        (0.42134, "frac", "0.4213", "42.1%"),
        (0.8123, "index", "0.8123", "0.812"),
        (None, "ms", "n/a", "n/a"),
    ],
)
def test_exact_and_display(value, unit, exact, display):
    assert units.exact(value, unit) == exact
    assert units.display(value, unit) == display


def test_deltas_in_their_unit_and_fractions_in_points():
    assert units.delta(-0.015, "frac") == "-1.5 pp"
    assert units.delta(120.0, "ms") == "+120 ms"
    assert units.delta(0.031, "index") == "+0.031"
    assert units.relative(0.123) == "+12.3%"
    assert units.regression_change(0.05, absolute=True) == "+0.05 absolute (baseline 0)"
    assert units.regression_change(0.1, absolute=False) == "+10.0%"
    assert units.bound(500, "ms") == "500 ms" and units.bound(0.7, "index") == "0.7"
    assert units.limit_percent(0.1) == "10%"


def test_evidence_reads_in_its_unit():
    assert units.evidence(0.0667, "frac") == "6.7%"
    assert units.evidence(1234.5, "ms") == "1,234 ms"
    assert units.evidence(2.5, "per_min") == "2.5/min"
    assert units.evidence(4.375, "ratio") == "4.38"
    assert units.evidence(8.0, None) == "8"
    assert units.evidence("2026-01-01T00:00:14.000000Z") == "01-01 00:00:14"
    assert units.evidence(list(range(8))) == "[0, 1, 2, 3, 4, 5, ...]"


def test_p_values_say_when_they_are_clipped():
    assert units.p_value(1e-9) == "<0.001" and units.p_value(0.0421) == "0.042"
    assert units.clipped_p_value(0.25) == ">=0.25" and units.clipped_p_value(0.001) == "<=0.001"


def test_timestamps_in_full_and_table_cells_plain():
    assert units.timestamp("2026-01-01T00:00:48.000000Z") == "2026-01-01 00:00:48 UTC"
    assert units.timestamp("2026-01-01T00:00:48.250000Z") == "2026-01-01 00:00:48.250 UTC"
    assert units.timestamp(None) == "n/a" and units.timestamp("not a time") == "not a time"
    assert [units.cell(v) for v in (3, 12.0, 1.23456789, -0.00001, 1234567.5, None, True, "gpu-0")] == [
        "3", "12", "1.2346", "0", "1234567.5", "n/a", "true", "gpu-0",
    ]
