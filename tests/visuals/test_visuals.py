"""The visuals' aggregates: defined or omitted with a reason, within the mark budget, units in
column names, deterministic, and consistent with the report they come from."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag.compare import ALPHA, MIN_KS, Comparison, Side, measure_changes
from coherence_diag.rules.loader import load_rules
from coherence_diag.visuals import MAX_TABLE_ROWS, SUPPORTS, Episode, Visual, VisualTable, build_visuals, column_has_unit
from coherence_diag.visuals.build import QUANTILE_GRID, TOP_DEVICES, Clock

ORDER = (
    "utilization-heatmap", "disruption-timeline", "wave-propagation", "synchronization-map", "hidden-capacity",
    "stragglers", "energy-latency", "latency-ecdf", "before-after",
)


@pytest.fixture(scope="module")
def built(sample_analyses):
    return {name: build_visuals(a) for name, a in sample_analyses.items()}


def _check_well_formed(visuals: tuple[Visual, ...]) -> None:
    assert tuple(v.id for v in visuals) == ORDER
    for v in visuals:
        if v.table is None:
            assert v.omitted_reason and len(v.omitted_reason) > 10, v.id
            continue
        assert v.omitted_reason is None
        assert 0 < len(v.table.rows) <= MAX_TABLE_ROWS, v.id
        assert all(column_has_unit(c, v.table.columns) for c in v.table.columns), v.table.columns
        assert v.caption and v.title
        for row in v.table.rows:
            for value in row:
                assert value is None or isinstance(value, (str, int, float, bool)), (v.id, value)
                assert not (isinstance(value, float) and not math.isfinite(value)), (v.id, row)


def test_every_visual_defined_or_omitted_on_samples(built):
    for name, visuals in built.items():
        _check_well_formed(visuals)
        # The sample traces carry every layer: all trace visuals are defined; before/after needs a baseline.
        assert [v.id for v in visuals if v.table is None] == ["before-after"], name


def test_deterministic(sample_analyses, built):
    again = build_visuals(sample_analyses["burst-amplification"])
    assert again == built["burst-amplification"]


def test_scheduler_only_trace_omits_what_it_cannot_show(scheduler_only):
    visuals = {v.id: v for v in build_visuals(scheduler_only)}
    _check_well_formed(tuple(visuals.values()))
    for vid in ("utilization-heatmap", "hidden-capacity", "stragglers", "energy-latency"):
        assert visuals[vid].table is None, vid
    assert "gpu" in visuals["utilization-heatmap"].omitted_reason
    assert "power_w" in visuals["energy-latency"].omitted_reason
    assert visuals["disruption-timeline"].table is not None  # scheduler rows alone give the timeline
    assert visuals["latency-ecdf"].table is not None
    timeline = visuals["disruption-timeline"].table
    assert set(timeline.column("slo_miss_count")) == {None}  # no objective: misses unknown, not zero


def test_heatmap_budget_and_order(built):
    heat = built["burst-amplification"][0].table
    devices = list(dict.fromkeys(heat.column("device")))
    assert len(devices) <= TOP_DEVICES
    starts = heat.column("bin_start_s")
    assert len(set(starts)) <= 60
    assert all(0.0 <= x <= 1.0 for x in heat.column("nominal_frac") if x is not None)
    assert all(0.0 <= x <= 1.0 for x in heat.column("effective_frac") if x is not None)


def test_timeline_marks_the_bursts_of_the_finding(sample_analyses, built):
    timeline = built["burst-amplification"][1]
    bursts = [e for e in timeline.episodes if e.kind == "burst"]
    assert bursts and all(e.rule == "burst-amplification" for e in bursts)
    assert all(e.start_s < e.end_s for e in timeline.episodes)
    n = sample_analyses["burst-amplification"].feature_values.values["burst_episodes"]
    assert len(bursts) <= n  # bursts whose backlogs overlap are merged into one episode
    assert timeline.time_origin_utc == sample_analyses["burst-amplification"].report.trace.start[:19] + ".000000Z"


def test_views_agree_with_the_report(sample_analyses, built):
    report = sample_analyses["burst-amplification"].report
    visuals = {v.id: v for v in built["burst-amplification"]}
    sync = visuals["synchronization-map"].table
    measured = {k: v for group in (report.index_breakdown.layers, report.index_breakdown.links) for k, v in group.items() if v is not None}
    assert dict(zip(sync.column("component"), sync.column("health_frac"))) == pytest.approx(measured, abs=1e-4)
    cap = visuals["hidden-capacity"].table
    for pool, hidden, nominal, effective in zip(cap.column("pool"), cap.column("hidden_frac"), cap.column("nominal_frac"), cap.column("effective_frac")):
        assert hidden == pytest.approx(report.index_breakdown.pools[pool]["HCL"], abs=1e-4)
        assert effective == pytest.approx(max(0.0, nominal - hidden), abs=2e-4)
    ecdf = visuals["latency-ecdf"].table
    per_group = {}
    for group, q, ms in zip(ecdf.column("group"), ecdf.column("quantile_frac"), ecdf.column("latency_ms")):
        per_group.setdefault(group, []).append((q, ms))
    for points in per_group.values():
        assert [q for q, _ in points] == list(QUANTILE_GRID)
        assert all(a[1] <= b[1] for a, b in zip(points, points[1:]))  # a distribution function rises


def test_baseline_and_comparison(sample_analyses):
    base, cand = sample_analyses["healthy"], sample_analyses["burst-amplification"]
    side = Side("x", "x", None, 0, 0, None, None)
    comparison = Comparison(side, side, measure_changes(base.report, cand.report), (), (), (), (), ALPHA, MIN_KS, "test")
    visuals = {v.id: v for v in build_visuals(cand, comparison, baseline=base)}
    groups = set(visuals["latency-ecdf"].table.column("group"))
    assert groups == {"baseline", "this trace"}
    before_after = visuals["before-after"].table
    assert before_after is not None and "relative_change_frac" in before_after.columns
    assert "latency p99" in " ".join(before_after.column("measure")).lower() or before_after.rows


def test_every_shipped_rule_has_a_supporting_visual():
    supported = {rule for rules in SUPPORTS.values() for rule in rules}
    assert {r.id for r in load_rules([])} <= supported


def test_model_rejects_bad_tables():
    with pytest.raises(ValueError, match="unit"):
        VisualTable(("latency",), ((1.0,),))
    with pytest.raises(ValueError, match="budget"):
        VisualTable(("latency_ms",), tuple((float(i),) for i in range(MAX_TABLE_ROWS + 1)))
    with pytest.raises(ValueError, match="exactly one"):
        Visual("x", "t", "c", "heatmap", None, None, ())
    with pytest.raises(ValueError, match="empty"):
        Visual("x", "t", "c", "heatmap", VisualTable(("latency_ms",), ()), None, ())
    with pytest.raises(ValueError, match="id"):
        Visual("Bad Id", "t", "c", "heatmap", None, "why", ())
    Episode("burst", 0.0, 1.0, "b")  # plain construction works


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 10**12),
    length=st.integers(0, 10**13),
    window=st.integers(1, 10**10),
    max_bins=st.integers(1, 200),
)
def test_clock_covers_the_span_in_at_most_max_bins(start, length, window, max_bins):
    clock = Clock.over(start, start + length, window, max_bins)
    assert 1 <= clock.bins <= max_bins
    assert clock.bin_ns % window == 0
    assert clock.t0_ns <= start and clock.t0_ns + clock.bins * clock.bin_ns > start + length
