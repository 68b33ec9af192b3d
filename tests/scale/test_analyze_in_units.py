"""`analyze` (and compare, gate, report) read a trace in work units when asked to or when it
exceeds the memory budget, and the report is byte-identical to the single pass's: on every sample
split into one-window units, on generated traces with requests crossing unit edges, retries and
samples on edges, on a Dask LocalCluster, and through the CLI. Bad scale options are exit 2."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import compare
from coherence_diag.analysis import analyze
from coherence_diag.errors import InputError
from coherence_diag.render import registry
from coherence_diag.scale import plan, read
from coherence_diag.scale.executors import executor
from coherence_diag.scale.read import ScaleOptions, read_in_units
from coherence_diag.scale.reduce import UnitTick
from tests.scale.test_units_equal import ONE_BYTE, SAMPLES, TS_TYPES, traces

TINY_UNITS = ScaleOptions(unit_budget_bytes=ONE_BYTE)  # no window fits: one window per unit


def report_json(path: Path | str, scale: ScaleOptions | None = None, window_s: float = 60.0, max_bad_fraction: float = 0.01) -> str:
    result = analyze(path, window_s=window_s, max_bad_fraction=max_bad_fraction, scale=scale, with_features=True)
    return registry.render_text("report", "json", result.report)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_in_one_window_units_gives_the_single_pass_report_byte_for_byte(path):
    """60 s windows: 6-7 units per sample, hundreds of requests crossing their edges. The report
    lists every feature (`with_features`), so every feature is compared, not only those rules read."""
    assert report_json(path, TINY_UNITS) == report_json(path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(traces(), st.sampled_from(TS_TYPES), st.sampled_from([3, 1000]))
def test_generated_traces_in_one_second_units_give_the_single_pass_report(tmp_path, frame, ts_type, row_group_rows):
    path = tmp_path / "trace.parquet"
    stored = pl.col("ts") if ts_type == pl.Int64 else pl.col("ts").cast(pl.Datetime("ns")).cast(ts_type)
    frame.with_columns(stored).write_parquet(path, row_group_size=row_group_rows, statistics=True)
    assert report_json(path, TINY_UNITS, window_s=1.0, max_bad_fraction=1.0) == report_json(path, window_s=1.0, max_bad_fraction=1.0)


def test_a_trace_that_fits_the_budget_is_read_in_one_pass():
    path = SAMPLES[0]
    assert read_in_units(path, ScaleOptions(), window_s=1.0, max_bad_fraction=0.01) is None  # half the machine
    assert read_in_units(path, ScaleOptions(memory_budget_bytes=2**40), window_s=1.0, max_bad_fraction=0.01) is None


def test_a_trace_over_the_default_budget_is_read_in_units(monkeypatch):
    monkeypatch.setattr(read, "default_budget_bytes", lambda: 1)
    monkeypatch.setattr(plan, "MIN_UNIT_BUDGET_BYTES", 1)  # else a sample is one smallest unit: one pass
    path = SAMPLES[0]
    got = read_in_units(path, ScaleOptions(), window_s=60.0, max_bad_fraction=0.01)
    assert got is not None and got.requests.height > 0 and got.summary.span.start_ns is not None


def test_progress_counts_both_passes_over_every_unit_and_every_row():
    ticks: list[UnitTick] = []
    path = next(p for p in SAMPLES if p.stem == "retry-amplification")
    analyze(path, window_s=60.0, scale=ScaleOptions(unit_budget_bytes=ONE_BYTE, progress=ticks.append))
    census = [t for t in ticks if t.stage == "census"]
    units = [t for t in ticks if t.stage == "units"]
    assert census and units and census[-1].done == census[-1].total and units[-1].done == units[-1].total
    assert [t.rows_done for t in ticks] == sorted(t.rows_done for t in ticks)
    assert ticks[-1].rows_done == ticks[-1].rows_total == 2 * pl.scan_parquet(path).select(pl.len()).collect().item()


def test_compare_in_units_gives_the_single_pass_comparison():
    base, candidate = SAMPLES[0], SAMPLES[1]

    def comparison(scale: ScaleOptions | None) -> str:
        return registry.render_text("comparison", "json", compare.compare_traces(base, candidate, window_s=60.0, scale=scale))

    assert comparison(TINY_UNITS) == comparison(None)


def test_an_env_comparison_of_one_trace_refuses_work_units():
    path = next(p for p in SAMPLES if p.stem == "migration-reconfiguration-risk")
    with pytest.raises(InputError, match="two envs of one trace"):
        compare.compare_envs(path, scale=TINY_UNITS)


def test_converted_inputs_cannot_be_read_in_units():
    from coherence_diag.ingest import FrameSource

    frame = pl.read_parquet(SAMPLES[0]).with_columns(pl.lit(0, pl.Int32).alias("_origin"), pl.int_range(pl.len(), dtype=pl.UInt32).alias("_record"))
    with pytest.raises(InputError, match="--from"):
        read_in_units(FrameSource("frame", frame, ("frame",)), TINY_UNITS, window_s=1.0, max_bad_fraction=0.01)


@pytest.fixture(scope="module")
def local_cluster():
    pytest.importorskip("distributed")
    with executor("local", workers=2) as run:
        yield run


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_a_local_cluster_gives_the_in_process_report_on_every_sample(local_cluster, path):
    on_cluster = ScaleOptions(unit_budget_bytes=ONE_BYTE, executor=local_cluster)
    assert report_json(path, on_cluster) == report_json(path)


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_scheduler_local_output_is_byte_identical_to_in_process(run_cli, tmp_path):
    pytest.importorskip("distributed")
    path = str(next(p for p in SAMPLES if p.stem == "healthy"))
    plain = run_cli("analyze", path, "-f", "json", "--window", "60", "--no-progress")
    local = run_cli("analyze", path, "-f", "json", "--window", "60", "--scheduler", "local", "--no-progress")
    assert plain.exit_code == local.exit_code == 0
    assert local.stdout == plain.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory-budget", "lots"], "--memory-budget 'lots'"),
        (["--scheduler", "loca1"], "--scheduler 'loca1'"),
    ],
)
def test_cli_bad_scale_options_are_exit_2(run_cli, args, message):
    result = run_cli("analyze", str(SAMPLES[0]), "--no-progress", *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_cli_a_csv_trace_with_a_memory_budget_asks_to_normalize_first(run_cli, tmp_path):
    path = tmp_path / "t.csv"
    pl.read_parquet(SAMPLES[0]).head(2000).write_csv(path)
    result = run_cli("analyze", str(path), "--memory-budget", "1MiB", "--no-progress")
    assert result.exit_code == 2 and "cannot be split into work units" in result.stderr and str(path) in result.stderr
