"""Properties that must hold for any trace: row order and sharding do not matter; fractions
stay in [0, 1]; output is deterministic."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import analyze
from coherence_diag.render.json_report import render, report_to_dict
from tests.tracegen import TRACE_SPECS as specs
from tests.tracegen import TraceSpec, make_trace, write

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _report(path) -> dict:
    report = report_to_dict(analyze(path).report)
    report["trace"].pop("path")
    return report


@SETTINGS
@given(spec=specs, perm_seed=st.integers(0, 2**32 - 1))
def test_row_order_does_not_change_results(tmp_path_factory, spec, perm_seed):
    tmp = tmp_path_factory.mktemp("order")
    frame = make_trace(spec)
    shuffled = frame[np.random.default_rng(perm_seed).permutation(frame.height)]
    write(frame, tmp / "a.parquet")
    write(shuffled, tmp / "b.parquet")
    assert _report(tmp / "a.parquet") == _report(tmp / "b.parquet")


@SETTINGS
@given(spec=specs, cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4), csv_mask=st.integers(0, 31))
def test_shard_split_does_not_change_results(tmp_path_factory, spec, cuts, csv_mask):
    tmp = tmp_path_factory.mktemp("shards")
    frame = make_trace(spec)
    write(frame, tmp / "whole.parquet")
    shards = tmp / "shards"
    shards.mkdir()
    bounds = sorted({0, frame.height, *(int(c * frame.height) for c in cuts)})
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        if hi > lo:
            write(frame[lo:hi], shards / f"part-{i:02d}.{'csv' if csv_mask >> i & 1 else 'parquet'}")
    assert _report(shards) == _report(tmp / "whole.parquet")


@SETTINGS
@given(spec=specs)
def test_fractions_stay_in_unit_interval(tmp_path_factory, spec):
    tmp = tmp_path_factory.mktemp("frac")
    write(make_trace(spec), tmp / "t.parquet")
    m = report_to_dict(analyze(tmp / "t.parquet").report)["metrics"]
    for name in ("nominal_utilization", "effective_utilization", "timeout_rate", "drop_rate", "slo_attainment"):
        value = m[name]
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    if m["effective_utilization"] is not None:
        assert m["effective_utilization"] <= m["nominal_utilization"] + 1e-12


def test_same_trace_gives_byte_identical_json(tmp_path):
    write(make_trace(TraceSpec(n_requests=150, seed=9)), tmp_path / "t.parquet")
    first = render(analyze(tmp_path / "t.parquet").report)
    second = render(analyze(tmp_path / "t.parquet").report)
    assert first == second


def test_window_size_changes_series_not_metrics(tmp_path):
    write(make_trace(TraceSpec(n_requests=150, seed=11)), tmp_path / "t.parquet")
    fine = analyze(tmp_path / "t.parquet", window_s=0.5)
    coarse = analyze(tmp_path / "t.parquet", window_s=5.0)
    assert fine.report.metrics == coarse.report.metrics
    assert fine.series.pools.height > coarse.series.pools.height
    assert fine.series.pools["arrivals"].sum() == coarse.series.pools["arrivals"].sum()
    busy = lambda a: a.series.devices["busy_ms"].sum()  # noqa: E731
    assert abs(busy(fine) - busy(coarse)) < 1e-6 * max(1.0, busy(coarse))
    assert pl.Series(fine.series.devices["busy_frac"].drop_nulls()).is_between(0, 1).all()
