"""The work-unit planner: window-aligned time slices that cover the trace exactly, each within
the memory budget unless one window alone exceeds it (then flagged)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag.errors import InputError
from coherence_diag.scale.footers import FileFooter, RowGroup
from coherence_diag.scale.plan import PEAK_PER_FOOTER_BYTE, parse_bytes, plan_units

T0 = 1_767_225_600_123_456_789  # not on any window boundary
S = 1_000_000_000


@st.composite
def footers(draw):
    groups = []
    for _ in range(draw(st.integers(1, 12))):
        start = T0 + draw(st.integers(0, 40 * S))
        span = draw(st.integers(0, 15 * S))
        layer = draw(st.sampled_from(["gpu", "hypervisor", "scheduler", None]))
        groups.append(RowGroup(draw(st.integers(1, 1000)), start, start + span, layer, layer, {"ts": draw(st.integers(0, 5000)), "x": draw(st.integers(0, 5000))}))
    return [FileFooter("t.parquet", "parquet", tuple(groups))]


@settings(max_examples=150, deadline=None)
@given(footers(), st.sampled_from([0.25, 1.0, 2.0, 5.0]), st.integers(500, 200_000), st.sampled_from([0, 3 * S, 60 * S]))
def test_units_cover_the_trace_on_the_window_grid_within_the_budget(files, window_s, budget, lookback_ns):
    plan = plan_units(files, budget_bytes=budget, window_s=window_s, lookback_ns=lookback_ns)
    window_ns = int(window_s * S)
    groups = files[0].row_groups
    first, last = min(g.ts_min_ns for g in groups), max(g.ts_max_ns for g in groups)
    units = plan.units
    assert units[0].start_ns == first // window_ns * window_ns
    assert units[-1].end_ns > last and units[-1].end_ns - window_ns <= last
    for unit, following in zip(units, units[1:]):
        assert unit.end_ns == following.start_ns  # contiguous: every instant in exactly one unit
    for unit in units:
        assert unit.start_ns % window_ns == 0 and unit.end_ns % window_ns == 0 and unit.end_ns > unit.start_ns
        assert unit.read_from_ns == unit.start_ns - lookback_ns
        if unit.over_budget:
            assert unit.end_ns - unit.start_ns == window_ns and unit.peak_bytes > budget
        else:
            assert unit.peak_bytes <= budget * (1 + 1e-9)
    assert plan.rows == sum(g.rows for g in groups)


@settings(max_examples=100, deadline=None)
@given(footers(), st.integers(500, 200_000))
def test_without_look_back_the_units_share_out_every_footer_byte(files, budget):
    plan = plan_units(files, budget_bytes=budget, lookback_ns=0, columns=["x"])
    total = sum(g.bytes_by_column["x"] for g in files[0].row_groups)
    assert plan.footer_bytes == total
    assert sum(u.peak_bytes for u in plan.units) / PEAK_PER_FOOTER_BYTE == pytest.approx(total, rel=1e-9, abs=1e-6)


def test_a_window_alone_over_the_budget_is_its_own_flagged_unit():
    heavy = RowGroup(1000, T0, T0 + S // 10, "gpu", "gpu", {"ts": 10_000})
    light = RowGroup(10, T0 + 5 * S, T0 + 9 * S, "gpu", "gpu", {"ts": 8})
    plan = plan_units([FileFooter("t.parquet", "parquet", (heavy, light))], budget_bytes=1000, lookback_ns=0)
    assert [u.over_budget for u in plan.units] == [True, False]
    assert plan.units[0].end_ns - plan.units[0].start_ns == S
    assert len(plan.over_budget) == 1


def test_the_look_back_counts_only_rows_that_may_be_hypervisor_rows():
    gpu = [RowGroup(10, T0 + i * S, T0 + i * S, "gpu", "gpu", {"ts": 100}) for i in range(10)]
    hyper = [RowGroup(10, T0 + i * S, T0 + i * S, "hypervisor", "hypervisor", {"ts": 100}) for i in range(10)]
    budget = int(400 * PEAK_PER_FOOTER_BYTE)  # two seconds of both layers fit, with no look-back
    no_back = plan_units([FileFooter("t", "parquet", tuple(gpu + hyper))], budget_bytes=budget, lookback_ns=0)
    gpu_only = plan_units([FileFooter("t", "parquet", tuple(gpu))], budget_bytes=budget, lookback_ns=5 * S)
    with_back = plan_units([FileFooter("t", "parquet", tuple(gpu + hyper))], budget_bytes=budget, lookback_ns=5 * S)
    assert len(no_back.units) == 5
    assert len(gpu_only.units) == 3  # 4 seconds of 100 bytes each per unit: the look-back reads nothing
    assert len(with_back.units) > len(no_back.units)


def test_csv_and_statistics_free_traces_cannot_be_planned_from_footers():
    csv = plan_units([FileFooter("t.csv", "csv", (RowGroup(0),))], budget_bytes=1 << 30)
    bare = plan_units([FileFooter("t.parquet", "parquet", (RowGroup(5, bytes_by_column={"ts": 40}),))], budget_bytes=1 << 30)
    assert csv.units == () and "CSV" in (csv.unplannable or "")
    assert bare.units == () and "statistics" in (bare.unplannable or "")


def test_a_row_group_of_null_timestamps_only_needs_no_range(tmp_path):
    """Its rows belong to no time slice (they are validated apart, all set aside): the trace is
    still planned, from its other row groups, and its rows are counted."""
    import polars as pl

    from coherence_diag.scale.footers import footers_of

    path = tmp_path / "t.parquet"
    frame = pl.DataFrame({"ts": [T0, T0 + S, None, None, None, T0 + 2 * S], "layer": ["queue"] * 6, "event": ["sample"] * 6})
    frame.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))).write_parquet(path, row_group_size=2, statistics=True)
    footers = footers_of(path)
    assert [g.ts_nulls_only for g in footers[0].row_groups] == [False, True, False]
    plan = plan_units(footers, budget_bytes=1 << 30)
    assert plan.unplannable is None and plan.rows == 6 and len(plan.units) == 1


@pytest.mark.parametrize(("text", "expected"), [("4GiB", 4 << 30), ("512MiB", 512 << 20), ("2G", 2 << 30), ("1.5GB", 3 << 29), ("1000", 1000)])
def test_memory_sizes_parse_as_users_write_them(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "0", "-2G", "4 GiBs"])
def test_a_bad_memory_size_is_an_input_error(text):
    with pytest.raises(InputError, match="--memory-budget"):
        parse_bytes(text)
