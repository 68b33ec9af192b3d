"""A trace made of K shifted copies of one slice (simulate/tiling.py, how `make bench-scale`
builds its 100M-row trace) analyzed in work units gives, wherever the copies are copies, the
slice's own figures: each copy's requests are the slice's requests (same latencies, waits,
devices, to the last bit), each copy's windows the slice's windows, counts K times the slice's,
and the fleet-wide ratios, medians and utilizations the slice's. Quantiles between order
statistics are those of the slice's values repeated K times (linear interpolation moves with n),
and rates per second take the gaps between copies into account.

Issue 12's acceptance asks this of the 100M-row trace against its 10M-row slice; here the slice
is a shipped sample and the work units are forced small, so copies and units cut each other."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from coherence_diag import analyze
from coherence_diag.metrics import QUANTILES
from coherence_diag.paths import REQUEST_SCHEMA, is_inference
from coherence_diag.scale.read import ScaleOptions
from coherence_diag.simulate.tiling import tile_trace

SAMPLES = Path(__file__).resolve().parents[2] / "sample_traces"
COPIES = 3
SMALL_BUDGET = 16 * 2**20  # about four units per copy: units cut copies, copies cut units
TIME_COLUMNS = tuple(c for c in REQUEST_SCHEMA if c.endswith("_ns"))  # instants, shifted with their copy


@pytest.fixture(scope="module", params=["healthy", "retry-amplification"])
def analyses(request, tmp_path_factory):
    slice_path = SAMPLES / f"{request.param}.parquet"
    tiled = tile_trace(slice_path, tmp_path_factory.mktemp("tiled") / "copies", COPIES)
    whole = analyze(str(tiled.directory), scale=ScaleOptions(unit_budget_bytes=SMALL_BUDGET))
    return analyze(slice_path), whole, tiled.shift_ns


def copy_of(requests: pl.DataFrame, k: int, shift_ns: int) -> pl.DataFrame:
    """Copy k's requests as the slice's: ids without the copy's prefix, times shifted back."""
    prefix = f"t{k:04d}-"
    return (
        requests.filter(pl.col("request_id").str.starts_with(prefix))
        .with_columns(pl.col("request_id").str.strip_prefix(prefix), *(pl.col(c) - k * shift_ns for c in TIME_COLUMNS))
        .drop("request_key")
        .sort("request_id")
    )


def test_each_copys_requests_are_the_slices_requests(analyses):
    one, whole, shift_ns = analyses
    slice_requests = one.requests.drop("request_key").sort("request_id")
    for k in range(COPIES):
        assert_frame_equal(copy_of(whole.requests, k, shift_ns), slice_requests, check_exact=True, check_dtypes=False)


def test_each_copys_pool_windows_are_the_slices_windows(analyses):
    one, whole, shift_ns = analyses
    assert len(whole.report.trace.warnings) == len(one.report.trace.warnings)
    pools = one.series.pools.with_columns(pl.col("pool").cast(pl.String)).sort("pool", "window_start_ns")
    tiled = whole.series.pools.with_columns(pl.col("pool").cast(pl.String))
    for k in range(COPIES):
        lo = pools["window_start_ns"].min() + k * shift_ns
        copy = (
            tiled.filter(pl.col("window_start_ns").is_between(lo, lo + shift_ns, closed="left"))
            .with_columns(pl.col("window_start_ns") - k * shift_ns)
            .sort("pool", "window_start_ns")
        )
        # Counts exactly; a window's mean may differ in the last bit (summation order).
        assert_frame_equal(copy, pools, check_exact=False, rel_tol=1e-12, abs_tol=0.0)


def test_counts_are_k_times_and_ratios_medians_and_utilizations_the_slices(analyses):
    one, whole, _ = analyses
    a, b = one.report.metrics, whole.report.metrics
    for name in ("total", "inference", "batch", "completed", "timeout", "dropped", "unfinished", "retried"):
        assert getattr(b.requests, name) == COPIES * getattr(a.requests, name), name
    assert whole.report.trace.rows == COPIES * one.report.trace.rows
    for name in ("timeout_rate", "drop_rate", "slo_attainment"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-12, abs=1e-12), name
    for name in ("nominal_utilization", "effective_utilization"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9), name
    for name in ("latency_ms", "queue_wait_ms", "ttft_ms"):
        assert getattr(b, name).p50 == getattr(a, name).p50, name  # K copies: the same middle


def test_upper_quantiles_are_those_of_the_slices_values_repeated(analyses):
    one, whole, _ = analyses
    inference = one.requests.filter(is_inference())  # what metrics.compute reads
    values = {
        "latency_ms": inference.filter(pl.col("outcome") == "completed")["latency_ms"],
        "queue_wait_ms": inference["queue_wait_ms"],
        "ttft_ms": inference["ttft_ms"],
    }
    for name, column in values.items():
        repeated = pl.concat([column.drop_nulls()] * COPIES)
        want = [repeated.quantile(q, interpolation="linear") for q in QUANTILES]
        got = getattr(whole.report.metrics, name)
        assert [got.p50, got.p95, got.p99] == pytest.approx(want, rel=1e-9), name


def test_rates_count_the_copies_over_the_scheduler_seconds(analyses):
    one, whole, shift_ns = analyses
    a, b = one.span, whole.span
    assert a is not None and b is not None
    # The scheduler's span of K copies: the slice's, plus K - 1 shifts.
    slice_ns = a.scheduler_end_ns - a.scheduler_start_ns
    assert b.scheduler_end_ns - b.scheduler_start_ns == slice_ns + (COPIES - 1) * shift_ns
    completed_per_s = COPIES * one.report.metrics.requests.completed / ((slice_ns + (COPIES - 1) * shift_ns) / 1e9)
    assert whole.report.metrics.throughput_rps == pytest.approx(completed_per_s, rel=1e-5)  # rounded to 6 decimals
