"""Every container and timestamp form of trace-format.md gives the same analysis."""

from __future__ import annotations

import polars as pl
import pytest

from coherence_diag import analyze
from coherence_diag.render.json_report import report_to_dict
from tests.tracegen import write


def _report(path) -> dict:
    report = report_to_dict(analyze(path).report)
    report["trace"].pop("path")
    return report


@pytest.fixture
def reference(tmp_path, trace_frame):
    path = tmp_path / "ref.parquet"
    write(trace_frame, path)
    return _report(path)


def test_csv_equals_parquet(tmp_path, trace_frame, reference):
    path = tmp_path / "t.csv"
    write(trace_frame, path)
    assert _report(path) == reference


def test_directory_of_shards_split_by_time(tmp_path, trace_frame, reference):
    shards = tmp_path / "shards"
    shards.mkdir()
    ordered = trace_frame.sort("ts")
    n = ordered.height
    for i, chunk in enumerate([ordered[: n // 3], ordered[n // 3 : 2 * n // 3], ordered[2 * n // 3 :]]):
        write(chunk, shards / f"part-{i}.{'csv' if i == 1 else 'parquet'}")
    assert _report(shards) == reference
    assert _report(str(shards / "part-*")) == reference


def test_shards_with_different_column_sets(tmp_path, trace_frame, reference):
    shards = tmp_path / "by-layer-shards"
    shards.mkdir()
    for layer in trace_frame["layer"].unique().sort():
        part = trace_frame.filter(pl.col("layer") == layer)
        part = part.select([c for c in part.columns if part[c].null_count() < part.height])
        write(part, shards / f"{layer}-shard.parquet")
    assert _report(shards) == reference


def test_directory_with_one_file_per_layer(tmp_path, trace_frame, reference):
    layers = tmp_path / "layers"
    layers.mkdir()
    for i, layer in enumerate(trace_frame["layer"].unique().sort()):
        part = trace_frame.filter(pl.col("layer") == layer).drop("layer")
        part = part.select([c for c in part.columns if part[c].null_count() < part.height])
        write(part, layers / f"{layer}.{'csv' if i % 2 else 'parquet'}")
    assert _report(layers) == reference


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda s: s.cast(pl.Datetime("ms", "UTC")), id="milliseconds"),
        pytest.param(lambda s: s.dt.replace_time_zone(None), id="naive-is-utc"),
        pytest.param(lambda s: s.dt.convert_time_zone("Asia/Kolkata"), id="other-zone"),
        pytest.param(lambda s: s.dt.epoch("ns"), id="int64-ns"),
        pytest.param(lambda s: s.cast(pl.Datetime("us", "UTC")), id="microseconds"),
    ],
)
def test_parquet_timestamp_forms(tmp_path, trace_frame, convert):
    # Round to milliseconds first so every unit can hold the same instants.
    base = trace_frame.with_columns(pl.col("ts").dt.truncate("1ms"))
    write(base, tmp_path / "base.parquet")
    base.with_columns(convert(pl.col("ts"))).write_parquet(tmp_path / "form.parquet")
    assert _report(tmp_path / "form.parquet") == _report(tmp_path / "base.parquet")


@pytest.mark.parametrize(
    "fmt",
    [
        pytest.param(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"), id="iso-z"),
        pytest.param(pl.col("ts").dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z"), id="iso-offset"),
        pytest.param(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S%.6f"), id="naive-space"),
        pytest.param(pl.col("ts").dt.epoch("ns").cast(pl.String), id="int-ns"),
    ],
)
def test_csv_timestamp_forms(tmp_path, trace_frame, fmt):
    base = trace_frame.with_columns(pl.col("ts").dt.truncate("1us"))
    write(base, tmp_path / "base.parquet")
    base.with_columns(fmt.alias("ts")).write_csv(tmp_path / "form.csv")
    assert _report(tmp_path / "form.csv") == _report(tmp_path / "base.parquet")


def test_extra_columns_are_kept_and_ignored(tmp_path, trace_frame, reference):
    path = tmp_path / "extra.parquet"
    write(trace_frame.with_columns(pl.lit("x").alias("rack"), pl.lit(1.5).alias("temperature_c")), path)
    assert _report(path) == reference


def test_scheduler_only_trace_is_valid(tmp_path, trace_frame):
    path = tmp_path / "sched.parquet"
    sched = trace_frame.filter(pl.col("layer") == "scheduler")
    write(sched.select([c for c in sched.columns if sched[c].null_count() < sched.height]), path)
    report = _report(path)
    assert report["metrics"]["latency_ms"]["p50"] is not None
    assert report["metrics"]["nominal_utilization"] is None
    assert report["evaluability"]["metrics.nominal_utilization"]["missing"] == ["gpu_util", "dur_ms"]


def _single_text(path) -> dict[str, str]:
    from coherence_diag import ingest

    return ingest.open_trace(path).single_text


def test_a_text_column_with_one_value_everywhere_is_read_as_a_constant(tmp_path, trace_frame):
    # Parquet statistics show `env` holds one value in every row group: validation uses it as a
    # constant (no per-row decoding), with the same analysis as the CSV path that has no
    # statistics.
    one_env = trace_frame.with_columns(pl.lit("prod-eu").alias("env"))
    parquet, csv = tmp_path / "t.parquet", tmp_path / "t.csv"
    one_env.write_parquet(parquet, row_group_size=100)
    write(one_env, csv)
    assert _single_text(parquet) == {"env": "prod-eu"} and _single_text(csv) == {}
    assert _report(parquet) == _report(csv)


@pytest.mark.parametrize(
    "env",
    [
        pl.when(pl.int_range(pl.len()) < 400).then(pl.lit("a")).otherwise(pl.lit("b")),  # two values, in different row groups
        pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.lit("a")),  # one null
        pl.lit("x" * 40),  # longer than untruncated statistics are guaranteed to be
    ],
    ids=["two-values", "a-null", "long-value"],
)
def test_text_columns_that_are_not_one_value_everywhere_are_read_row_by_row(tmp_path, trace_frame, env):
    path = tmp_path / "t.parquet"
    trace_frame.with_columns(env.alias("env")).write_parquet(path, row_group_size=100)
    assert "env" not in _single_text(path)


@pytest.mark.parametrize("name", ["run[1].parquet", "a?b.csv", "x*y.parquet"])
def test_a_file_name_with_glob_characters_is_read_literally(tmp_path, trace_frame, reference, name):
    path = tmp_path / name
    write(trace_frame, path)
    assert _report(path) == reference
