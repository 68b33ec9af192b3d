"""The projection after the request paths (projection.py) is invisible: the declared table names
real layers and columns, projecting keeps the rows' order, and the report (every feature), the
request table, the time series and the visuals are the same with and without it. It also frees
the full validated frames."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from coherence_diag import analysis, ingest, paths, projection, schema, validate
from coherence_diag.render.json_report import render
from coherence_diag.request_keys import KEY
from coherence_diag.summary import summarize
from coherence_diag.visuals import build_visuals
from tests.tracegen import TRACE_SPECS as specs
from tests.tracegen import TraceSpec, make_trace, write

SAMPLES = sorted(Path(__file__).resolve().parents[1].glob("sample_traces/*.parquet"))
# Samples whose readers differ most: retries and timeouts, virtualization, migrations, transfers, batch holds.
SOME_SAMPLES = [p for p in SAMPLES if p.stem in {
    "retry-amplification", "virtualization-control-distortion", "migration-reconfiguration-risk",
    "interconnect-capacity-inaccessibility", "slot-locking", "healthy",
}]


def _unprojected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projection, "project_layers", lambda layers: dict(layers))


def _both(path: Path | str, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> tuple[analysis.Analysis, analysis.Analysis]:
    projected = analysis.analyze(path, with_features=True, **kwargs)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        _unprojected(m)
        full = analysis.analyze(path, with_features=True, **kwargs)  # type: ignore[arg-type]
    return projected, full


def assert_invisible(projected: analysis.Analysis, full: analysis.Analysis, *, visuals: bool = False) -> None:
    assert render(projected.report) == render(full.report)
    # The request table has no defined row order (hash-based group-bys; paths.py): by key.
    assert_frame_equal(projected.requests.sort(KEY), full.requests.sort(KEY), check_exact=True)
    for table in ("pools", "devices", "queues", "links", "hosts"):
        mine, theirs = getattr(projected.series, table), getattr(full.series, table)
        if table == "devices":  # unsorted by design (timeseries.py)
            mine, theirs = (f.sort(pl.col("device").cast(pl.String), "window_start_ns") for f in (mine, theirs))
        # Float means over requests in the table's (undefined) order differ in their last bits from
        # one run to the next, with or without the projection (the pools' latency_mean_ms).
        assert_frame_equal(mine, theirs, check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    if visuals:
        assert build_visuals(projected) == build_visuals(full)


# --- the declared table ------------------------------------------------------------------------


def test_the_table_names_only_real_layers_events_and_columns():
    for layer, reads in projection.READS.items():
        assert layer in schema.LAYERS
        assert set(reads.events) <= set(schema.EVENTS[layer]), layer
        known = set(schema.LAYER_COLUMNS[layer]) | ({KEY} if "request_id" in schema.LAYER_COLUMNS[layer] else set())
        assert set(reads.columns) <= known, (layer, set(reads.columns) - known)
        assert {"ts", "event"} <= set(reads.columns)  # every reader filters by event; the row filter needs it
        assert len(set(reads.columns)) == len(reads.columns) and len(set(reads.events)) == len(reads.events)


def test_a_layer_no_reader_needs_is_dropped(monkeypatch):
    frame = pl.DataFrame({"ts": [1, 2], "event": ["sample", "sample"], "depth": [1, 2]})
    monkeypatch.delitem(projection.READS, "queue")
    assert projection.project_layers({"queue": frame}) == {}


# --- rows, columns and their order ---------------------------------------------------------------

EVENTS = list(schema.EVENTS["scheduler"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 5), st.one_of(st.none(), st.integers(0, 2))), max_size=40))
def test_projecting_keeps_the_read_rows_in_their_order(rows):
    frame = pl.DataFrame(
        {
            "ts": list(range(len(rows), 0, -1)),  # distinct, in no sorted order
            "event": [e for e, _, _ in rows],
            "request_id": [f"r{k}" for _, k, _ in rows],
            KEY: pl.Series([k for _, k, _ in rows], dtype=pl.Int128),
            "attempt": [a for _, _, a in rows],
            "priority": [7] * len(rows),
        },
        schema_overrides={"event": pl.Categorical},
    )
    out = projection.project_layers({"scheduler": frame})["scheduler"]
    retried = {k for e, k, a in rows if e == "retry" or (a or 0) > 0}
    wanted = [i for i, (e, k, _) in enumerate(rows) if e in projection.READS["scheduler"].events or k in retried]
    if not wanted and rows:
        wanted = [0]  # a layer with rows keeps one
    assert out["ts"].to_list() == [frame["ts"][i] for i in wanted]
    assert out.columns == ["ts", "event", KEY, "attempt"]  # the frame's order, read columns only


def test_a_layer_whose_every_row_is_read_is_not_copied():
    frame = pl.DataFrame({"ts": [1, 2], "event": ["sample", "sample"], "queue": ["q", "q"], "host": ["h", "h"]})
    out = projection.project_layers({"queue": frame})["queue"]
    assert out.columns == ["ts", "event", "queue"]
    assert out.height == 2


def test_a_scalar_column_stays_a_scalar():
    n = 1_000_000
    frame = pl.DataFrame({"ts": pl.int_range(n, eager=True), "event": pl.Series(["dispatch", "arrive"] * (n // 2))}).with_columns(
        pl.lit(0, pl.Int64).alias("attempt"), pl.lit(None, pl.Int128).alias(KEY), pl.lit("p").cast(pl.Categorical).alias("pool")
    )
    out = projection.project_layers({"scheduler": frame})["scheduler"]
    assert out.height == n // 2
    literal = frame.select("attempt", "pool").estimated_size()
    assert literal < 1000 and out.select("attempt", "pool").estimated_size() < 1000


# --- invisible ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_gives_the_same_report_with_and_without_the_projection(path, monkeypatch):
    projected, full = _both(path, monkeypatch)
    assert_invisible(projected, full, visuals=path in SOME_SAMPLES)




@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs, drop_attempts=st.booleans())
def test_generated_traces_give_the_same_report_with_and_without_the_projection(tmp_path_factory, monkeypatch, spec, drop_attempts):
    path = tmp_path_factory.mktemp("proj") / "t.parquet"
    frame = make_trace(spec)
    if drop_attempts:  # attempts counted from `retry` rows instead
        frame = frame.drop("attempt")
    write(frame, path)
    assert_invisible(*_both(path, monkeypatch, window_s=0.5))


def test_a_scheduler_of_unread_events_only_still_counts_as_a_layer(tmp_path, monkeypatch):
    # No dispatch, timeout, drop or retry: the projection keeps one row, and features that tell
    # "no scheduler layer" from "no dispatches" (virtualization) see the same as without it.
    frame = make_trace(TraceSpec(n_requests=40, seed=5, retry_frac=0.0, timeout_frac=0.0, drop_frac=0.0, batch_jobs=0))
    frame = frame.filter(~((pl.col("layer") == "scheduler") & pl.col("event").is_in(["dispatch", "timeout", "drop", "retry"])))
    write(frame, tmp_path / "t.parquet")
    projected, full = _both(tmp_path / "t.parquet", monkeypatch)
    assert projected.trace.layers["scheduler"].height == 1
    assert projected.report.features is not None and projected.report.features["virt_span_share"].value is not None
    assert_invisible(projected, full, visuals=True)


# --- memory ------------------------------------------------------------------------------------


def test_each_full_validated_layer_is_freed_before_the_next_is_read(tmp_path, monkeypatch):
    # The single pass (analysis.read_single_pass) takes what it needs of each layer as soon as it
    # is validated: the full frames are never all in memory at once.
    write(make_trace(TraceSpec(n_requests=60, seed=2)), tmp_path / "t.parquet")
    refs: list[weakref.ref[pl.DataFrame]] = []
    alive_at_each_layer: list[int] = []
    validate_rows = validate.validate_rows

    def recording(source: ingest.TraceSource, *, keep: validate.LayerKeeper | None = None) -> validate.ValidatedTrace:
        assert keep is not None

        def keeping(name: str, frame: pl.DataFrame) -> pl.DataFrame | None:
            gc.collect()
            alive_at_each_layer.append(sum(ref() is not None for ref in refs))
            refs.append(weakref.ref(frame))
            return keep(name, frame)

        return validate_rows(source, keep=keeping)

    alive: list[int] = []

    def progress(message: str) -> None:
        if message == "computing metrics":
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))

    monkeypatch.setattr(validate, "validate_rows", recording)
    result = analysis.analyze(tmp_path / "t.parquet", progress=progress)
    assert len(refs) == 5 and alive_at_each_layer == [0] * 5 and alive == [0]
    assert "request_id" not in result.trace.layers["scheduler"].columns
    assert result.requests["request_id"].null_count() == 0


def test_the_single_pass_gives_the_request_table_and_summary_of_the_full_layers(tmp_path):
    # What the single pass builds layer by layer equals the request paths and row summary of the
    # whole validated layers (as `analyze_trace` builds them from a `read_trace`).
    write(make_trace(TraceSpec(n_requests=80, seed=5, retry_frac=0.2)), tmp_path / "t.parquet")
    whole = analysis.read_trace(tmp_path / "t.parquet")
    requests = paths.request_paths(whole.layers)
    summary = summarize(whole.layers, requests)
    single = analysis.read_single_pass(tmp_path / "t.parquet")
    key = [KEY]
    assert_frame_equal(single.requests.sort(key), requests.sort(key))
    assert single.summary.span == summary.span and single.summary.envs == summary.envs
    assert_frame_equal(single.summary.request_ids.sort(key), summary.request_ids.sort(key))
    projected = projection.project_layers(whole.layers)
    assert single.trace.layers.keys() == projected.keys()
    for name, frame in projected.items():
        assert_frame_equal(single.trace.layers[name], frame)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 7), st.integers(0, 1)), max_size=40),
    st.lists(st.integers(0, 2), min_size=8, max_size=8),
)
def test_reprojecting_units_projections_gives_the_projection_of_the_whole(rows, unit_of_request):
    # Work units (scale/units.py) never split a request's rows: each unit projects its own rows,
    # and projecting their concatenation again gives what projecting the whole would.
    frame = pl.DataFrame(
        {"ts": list(range(len(rows))), "event": [e for e, _, _ in rows], KEY: pl.Series([k for _, k, _ in rows], dtype=pl.Int128),
         "attempt": [a for _, _, a in rows]},
        schema_overrides={"event": pl.Categorical},
    )
    unit = pl.col(KEY).cast(pl.Int64).replace_strict(dict(enumerate(unit_of_request)), return_dtype=pl.Int64)
    units = [frame.filter(unit == u) for u in range(3)]
    whole = pl.concat(units)
    parts = pl.concat([projection.project_layers({"scheduler": u})["scheduler"] for u in units])
    assert_frame_equal(projection.project_layers({"scheduler": parts})["scheduler"], projection.project_layers({"scheduler": whole})["scheduler"])
