"""Bad input: exit 2, one clear message naming the file and the problem, no output file,
input untouched. Usable traces with a few bad rows are analyzed and the rows reported."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import schema
from tests.conftest import file_digest
from tests.tracegen import TraceSpec, make_trace, write


def _expect_bad(run_cli, target: Path | str, tmp_path: Path, *fragments: str) -> str:
    out = tmp_path / "out" / "report.json"
    out.parent.mkdir(exist_ok=True)
    before = {p: file_digest(p) for p in Path(tmp_path).rglob("*") if p.is_file()}
    result = run_cli("analyze", target, "--format", "json", "--output", out)
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith("error: "), message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp file left behind either
    after = {p: file_digest(p) for p in before}
    assert before == after  # inputs never modified
    return message


def test_missing_path(run_cli, tmp_path):
    _expect_bad(run_cli, tmp_path / "nope.parquet", tmp_path, "nope.parquet", "no such file or directory")


def test_empty_file(run_cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _expect_bad(run_cli, empty, tmp_path, "empty.csv", "empty")


def test_not_parquet_or_csv(run_cli, tmp_path):
    other = tmp_path / "trace.json"
    other.write_text('{"a": 1}')
    _expect_bad(run_cli, other, tmp_path, "trace.json", "not a Parquet or CSV file")


def test_parquet_suffix_without_parquet_content(run_cli, tmp_path):
    fake = tmp_path / "trace.parquet"
    fake.write_text("ts,layer,event\n1,scheduler,arrive\n")
    _expect_bad(run_cli, fake, tmp_path, "trace.parquet", "PAR1")


def test_corrupt_parquet(run_cli, tmp_path, trace_frame):
    good = tmp_path / "good.parquet"
    write(trace_frame, good)
    data = bytearray(good.read_bytes())
    body = slice(8, len(data) // 2)  # scribble over page headers and data, keep the footer
    data[body] = bytes((i * 37) % 251 for i in range(body.stop - body.start))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(bytes(data))
    good.unlink()
    _expect_bad(run_cli, corrupt, tmp_path, "corrupt.parquet")


def test_truncated_parquet(run_cli, tmp_path, trace_frame):
    good = tmp_path / "good.parquet"
    write(trace_frame, good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    _expect_bad(run_cli, cut, tmp_path, "cut.parquet", "not a readable Parquet file")


def test_missing_required_columns(run_cli, tmp_path, trace_frame):
    path = tmp_path / "noevent.parquet"
    trace_frame.drop("event").write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "noevent.parquet", "missing required column", "event")


def test_missing_column_required_by_a_layer(run_cli, tmp_path, trace_frame):
    path = tmp_path / "nodur.parquet"
    trace_frame.drop("dur_ms").write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "dur_ms", "gpu `exec` rows")


def test_wrong_type_in_parquet(run_cli, tmp_path, trace_frame):
    path = tmp_path / "types.parquet"
    trace_frame.with_columns(pl.col("dur_ms").cast(pl.String), pl.col("gpu_util").cast(pl.String)).write_parquet(path)
    message = _expect_bad(run_cli, path, tmp_path, "types.parquet", "`dur_ms`", "`gpu_util`", "expected")
    assert "2 problems" in message  # all problems reported, not only the first


def test_wrong_type_in_csv(run_cli, tmp_path, trace_frame):
    path = tmp_path / "types.csv"
    write(trace_frame, path)
    text = path.read_text().splitlines()
    header = text[0].split(",")
    idx = header.index("dur_ms")
    for i, line in enumerate(text[1:], start=1):
        cells = line.split(",")
        if cells[idx]:
            cells[idx] = "fast"
            text[i] = ",".join(cells)
            break
    path.write_text("\n".join(text) + "\n")
    _expect_bad(run_cli, path, tmp_path, "types.csv", "dur_ms", "fast")


def test_unknown_layer(run_cli, tmp_path, trace_frame):
    path = tmp_path / "layers.parquet"
    trace_frame.with_columns(pl.lit("storage").alias("layer")).write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "no usable rows", "layer is not one of", "layers.parquet")


def test_per_layer_file_with_unknown_layer_name(run_cli, tmp_path, trace_frame):
    d = tmp_path / "bylayer"
    d.mkdir()
    trace_frame.filter(pl.col("layer") == "scheduler").drop("layer").write_parquet(d / "scheduler.parquet")
    trace_frame.filter(pl.col("layer") == "gpu").drop("layer").write_parquet(d / "storage.parquet")
    _expect_bad(run_cli, d, tmp_path, "storage.parquet", "no `layer` column", "not a layer name")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5.0])
def test_invalid_durations(run_cli, tmp_path, trace_frame, bad):
    path = tmp_path / "dur.parquet"
    frame = trace_frame.with_columns(
        pl.when(pl.col("layer") == "gpu").then(pl.lit(bad)).otherwise(pl.col("dur_ms")).alias("dur_ms")
    )
    frame.write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "dur.parquet", "`dur_ms`", "NaN, infinite or negative", "invalid_duration")


def test_fraction_out_of_range(run_cli, tmp_path, trace_frame):
    path = tmp_path / "frac.parquet"
    trace_frame.with_columns(pl.col("gpu_util") * 100).write_parquet(path)  # percent, not a fraction
    _expect_bad(run_cli, path, tmp_path, "frac.parquet", "`gpu_util`", "outside [0, 1]")


def test_completion_before_arrival(run_cli, tmp_path, trace_frame):
    path = tmp_path / "order.parquet"
    shift = pl.duration(seconds=3600)
    frame = trace_frame.with_columns(
        pl.when((pl.col("event") == "arrive") & (pl.col("layer") == "scheduler"))
        .then(pl.col("ts") + shift)
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    frame.write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "order.parquet", "completes before it arrives", "completion_before_arrival")


def test_duplicate_rows(run_cli, tmp_path, trace_frame):
    path = tmp_path / "dups.parquet"
    pl.concat([trace_frame, trace_frame.head(200)]).write_parquet(path)
    _expect_bad(run_cli, path, tmp_path, "dups.parquet", "exact duplicate", "duplicate_row")


def test_non_utf8_csv(run_cli, tmp_path, trace_frame):
    path = tmp_path / "latin1.csv"
    write(trace_frame, path)
    path.write_bytes(path.read_bytes().replace(b"host-a", "hôst-a".encode("latin-1")))
    _expect_bad(run_cli, path, tmp_path, "latin1.csv", "not UTF-8")


def test_directory_without_trace_files(run_cli, tmp_path):
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    _expect_bad(run_cli, d, tmp_path, "nothing", "no trace files")


def test_glob_matching_nothing(run_cli, tmp_path):
    _expect_bad(run_cli, str(tmp_path / "shards" / "*.parquet"), tmp_path, "matches no")


def test_all_problems_reported_across_files(run_cli, tmp_path, trace_frame):
    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.parquet").write_bytes(b"")
    (d / "b.csv").write_bytes(b"ts,layer,event\n1,gpu,sample\n" + "\xe9".encode("latin-1"))
    message = _expect_bad(run_cli, d, tmp_path, "2 problems", "a.parquet", "b.csv")
    assert "empty" in message and "UTF-8" in message


def test_output_over_input_is_refused(run_cli, tmp_path, trace_file):
    digest = file_digest(trace_file)
    result = run_cli("analyze", trace_file, "--format", "json", "--output", trace_file)
    assert result.exit_code == 2
    assert "refusing" in result.stderr
    assert file_digest(trace_file) == digest


def test_a_few_bad_rows_are_set_aside_and_reported(run_cli, tmp_path, trace_frame):
    path = tmp_path / "mostly-good.parquet"
    first_exec = trace_frame.with_row_index().filter(pl.col("event") == "exec")["index"][0]
    frame = trace_frame.with_row_index().with_columns(
        pl.when(pl.col("index") == first_exec).then(pl.lit(-1.0)).otherwise(pl.col("dur_ms")).alias("dur_ms")
    ).drop("index")
    frame.write_parquet(path)
    out = tmp_path / "r.json"
    result = run_cli("analyze", path, "--format", "json", "--output", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["trace"]["set_aside"] == {"invalid_duration:dur_ms": 1}
    assert report["trace"]["rows"] == trace_frame.height


def test_bad_row_budget_is_configurable(run_cli, tmp_path, trace_frame):
    path = tmp_path / "dups.parquet"
    pl.concat([trace_frame, trace_frame.head(200)]).write_parquet(path)
    result = run_cli("analyze", path, "--format", "json", "--max-bad-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trace"]["set_aside"] == {"duplicate_row": 200}


def test_unknown_events_are_warnings_not_errors(run_cli, tmp_path, trace_frame):
    path = tmp_path / "extra.parquet"
    extra = trace_frame.head(50).with_columns(pl.lit("thermal_throttle").alias("event"))
    pl.concat([trace_frame, extra]).write_parquet(path)
    result = run_cli("analyze", path, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sum(v for k, v in report["trace"]["set_aside"].items() if k.startswith("unknown_event")) == 50
    assert any("event is not defined" in w for w in report["trace"]["warnings"])


# --- values beyond a column's physical bound (schema.BOUNDS) ----------------------------------
# 1e308 ms is no measurement: converted to nanoseconds (or 1e308 W to fixed point) it overflowed
# Int64 inside the analysis, an internal error (exit 3). 2^62 tokens or bytes are no request's
# either, and a sum of two overflows. Such rows are set aside like any other invalid row.

_OUT_OF_RANGE = [  # column, rows it is put on, value, the reason:column it is set aside with
    ("dur_ms", pl.col("event") == "exec", 1e308, "duration_out_of_range:dur_ms"),
    ("dur_ms", pl.col("event") == "exec", float("inf"), "invalid_duration:dur_ms"),
    ("dur_ms", pl.col("event") == "exec", 604_800_000.5, "duration_out_of_range:dur_ms"),
    ("tokens", pl.col("tokens").is_not_null(), 2**62, "tokens_out_of_range:tokens"),
    ("prompt_tokens", pl.col("prompt_tokens").is_not_null(), 2**62, "tokens_out_of_range:prompt_tokens"),
    ("output_tokens", pl.col("output_tokens").is_not_null(), 2**62, "tokens_out_of_range:output_tokens"),
    ("tokens", pl.col("tokens").is_not_null(), 2**31 + 1, "tokens_out_of_range:tokens"),
    ("bytes", pl.col("bytes").is_not_null(), 2**62, "bytes_out_of_range:bytes"),
    ("predicted_ms", pl.col("predicted_ms").is_not_null(), 1e308, "duration_out_of_range:predicted_ms"),
    ("power_w", pl.col("power_w").is_not_null(), 1e308, "power_out_of_range:power_w"),
    ("power_w", pl.col("power_w").is_not_null(), -1e308, "power_out_of_range:power_w"),
]
_IDS = [f"{column}={value:g}" for column, _, value, _ in _OUT_OF_RANGE]


def _put(frame: pl.DataFrame, column: str, where: pl.Expr, value: float | int, *, first_only: bool) -> pl.DataFrame:
    """`value` in `column` on the first row matching `where`, or on every such row."""
    target = where & (pl.int_range(pl.len()) == pl.int_range(pl.len()).filter(where).first()) if first_only else where
    dtype = frame.schema[column] if column in frame.columns else pl.Float64
    current = pl.col(column) if column in frame.columns else pl.lit(None, dtype)
    return frame.with_columns(pl.when(target.fill_null(False)).then(pl.lit(value, dtype)).otherwise(current).alias(column))


@pytest.mark.parametrize(("column", "where", "value", "reason"), _OUT_OF_RANGE, ids=_IDS)
def test_one_out_of_range_value_is_set_aside(run_cli, tmp_path, trace_frame, column, where, value, reason):
    path = tmp_path / "extreme.parquet"
    _put(trace_frame, column, where, value, first_only=True).write_parquet(path)
    out = tmp_path / "r.json"
    result = run_cli("analyze", path, "--format", "json", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["trace"]["set_aside"] == {reason: 1}
    assert report["trace"]["rows"] == trace_frame.height


@pytest.mark.parametrize(
    ("column", "where", "value", "fragments"),
    [
        ("dur_ms", pl.col("event") == "exec", 1e308, ("duration longer than 7 days", "expected at most 604,800,000 ms", "[duration_out_of_range]")),
        ("dur_ms", pl.col("event") == "exec", float("inf"), ("NaN, infinite or negative", "[invalid_duration]")),
        ("tokens", pl.col("tokens").is_not_null(), 2**62, ("token count above 2^31", "expected at most 2,147,483,648 tokens", "[tokens_out_of_range]")),
        ("prompt_tokens", pl.col("prompt_tokens").is_not_null(), 2**62, ("expected at most 2,147,483,648 tokens", "[tokens_out_of_range]")),
        ("bytes", pl.col("bytes").is_not_null(), 2**62, ("above 2^50", "expected at most 1,125,899,906,842,624 bytes", "[bytes_out_of_range]")),
        ("power_w", pl.col("power_w").is_not_null(), 1e308, ("expected 0 to 100,000 W", "[power_out_of_range]")),
    ],
    ids=["dur_ms", "dur_ms-inf", "tokens", "prompt_tokens", "bytes", "power_w"],
)
def test_many_out_of_range_values_reject_the_trace(run_cli, tmp_path, trace_frame, column, where, value, fragments):
    path = tmp_path / "extreme.parquet"
    _put(trace_frame, column, where, value, first_only=False).write_parquet(path)
    message = _expect_bad(run_cli, path, tmp_path, "extreme.parquet", f"`{column}`", "--max-bad-fraction", *fragments)
    assert "internal error" not in message


_OPTIONAL_FLOATS = {  # column: the rows that carry it
    "slo_ms": (pl.col("event") == "arrive") & (pl.col("workload_class") == "inference"),
    "ttft_slo_ms": (pl.col("event") == "arrive") & (pl.col("workload_class") == "inference"),
    "predicted_ms": pl.col("predicted_ms").is_not_null(),
    "power_w": pl.col("power_w").is_not_null(),
    "vgpu_wait_ms": pl.col("layer") == "hypervisor",
}


def _expected_reason(column: str, value: float) -> str | None:
    bound = schema.BOUNDS[column]
    if column == "power_w":
        if not math.isfinite(value):
            return "invalid_number"
        return bound.reason if not 0 <= value <= bound.high else None
    if not (math.isfinite(value) and value >= 0):
        return "invalid_duration"
    return bound.reason if value > bound.high else None


@functools.cache
def _small_trace() -> pl.DataFrame:
    return make_trace(TraceSpec(n_requests=60, seed=5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    column=st.sampled_from(sorted(_OPTIONAL_FLOATS)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),  # any double, the extremes included
        st.floats(min_value=0, max_value=2e9),  # around the 7-day and 100 kW bounds
        st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324, 604_800_000.0, 100_000.0]),
    ),
)
def test_extreme_optional_floats_never_crash(run_cli, tmp_path, column, value):
    """Whatever double an optional float column holds, analyze exits 0: the row is kept or set aside."""
    path, out = tmp_path / "t.parquet", tmp_path / "r.json"  # overwritten by each example
    _put(_small_trace(), column, _OPTIONAL_FLOATS[column], value, first_only=True).write_parquet(path)
    result = run_cli("analyze", path, "--format", "json", "--output", out, "--no-progress")
    assert result.exit_code == 0, (column, value, result.output)
    reason = _expected_reason(column, value)
    assert json.loads(out.read_text())["trace"]["set_aside"] == ({f"{reason}:{column}": 1} if reason else {}), (column, value)
