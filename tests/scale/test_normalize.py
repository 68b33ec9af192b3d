"""`normalize`: any trace in, one Parquet file sorted by (layer, ts) out, with the same rows, in
row groups that predicates can skip; the external sort gives the same file as the in-memory one."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag import analyze
from coherence_diag.ingest import ORIGIN, RECORD, open_trace
from coherence_diag.render.json_report import render
from coherence_diag.scale.footers import footers_of
from coherence_diag.scale.layout import check_layout
from coherence_diag.scale.normalize import chunk_table, normalize
from tests.conftest import REPO, file_digest
from tests.tracegen import TraceSpec, make_trace, write


def _report(path) -> dict:
    out = json.loads(render(analyze(str(path)).report))
    out["trace"].pop("path")
    return out


def _rows(path) -> pl.DataFrame:
    return pl.read_parquet(path)


@pytest.fixture
def shuffled(tmp_path):
    """A trace whose rows are in no order, over several shards of mixed containers."""
    frame = make_trace(TraceSpec(n_requests=150, seed=5)).sample(fraction=1.0, shuffle=True, seed=1)
    shards = tmp_path / "shards"
    shards.mkdir()
    third = frame.height // 3
    write(frame.slice(0, third), shards / "a.parquet")
    write(frame.slice(third, third), shards / "b.csv")
    write(frame.slice(2 * third), shards / "c.parquet")
    return shards


def test_rows_come_out_sorted_by_layer_then_time_in_row_groups_of_one_layer(shuffled, tmp_path):
    out = tmp_path / "n.parquet"
    done = normalize(shuffled, out, row_group_rows=200)
    rows = _rows(out)
    assert rows.height == done.rows == pl.scan_parquet(shuffled / "*.parquet").select(pl.len()).collect().item() + pl.read_csv(shuffled / "b.csv").height
    assert rows.equals(rows.sort("layer", "ts", maintain_order=True))
    meta = pq.read_metadata(out)
    assert meta.num_row_groups == done.row_groups
    layer_index = meta.schema.names.index("layer")
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        assert 0 < group.num_rows <= 200
        stats = group.column(layer_index).statistics
        assert stats.has_min_max and stats.min == stats.max  # one layer per row group
    assert check_layout(footers_of(out)).time_skips


@pytest.fixture
def per_layer(tmp_path):
    """One file per layer, in no order: the files have different columns (one has an extra)."""
    frame = make_trace(TraceSpec(n_requests=120, seed=8)).sample(fraction=1.0, shuffle=True, seed=2)
    layers = tmp_path / "layers"
    layers.mkdir()
    for (layer,), part in frame.partition_by("layer", as_dict=True).items():
        part = part.drop("layer").select(c for c in part.columns if c != "layer" and part[c].null_count() < part.height)
        write(part.with_columns(pl.lit(3).alias("extra_n")) if layer == "gpu" else part, layers / f"{layer}.parquet")
    return layers


@pytest.mark.parametrize("trace", ["shuffled", "per_layer"])
def test_the_external_sort_writes_the_same_file_as_the_in_memory_sort(trace, request, tmp_path):
    source = request.getfixturevalue(trace)
    in_memory = normalize(source, tmp_path / "mem.parquet", row_group_rows=100)
    chunked = normalize(source, tmp_path / "ext.parquet", row_group_rows=100, budget_bytes=20_000)
    assert in_memory.chunks == 1 and chunked.chunks > 5
    assert file_digest(tmp_path / "mem.parquet") == file_digest(tmp_path / "ext.parquet")
    assert not list(tmp_path.glob(".*"))  # no spill or temporary file left behind


def test_the_rows_are_the_union_of_the_files_sorted(per_layer, tmp_path):
    """The pieces read file by file give the rows and columns of the trace's union scan."""
    normalize(per_layer, tmp_path / "n.parquet", row_group_rows=100, budget_bytes=20_000)
    union = open_trace(per_layer).scan().sort("layer", "ts", ORIGIN, RECORD, nulls_last=True).drop(ORIGIN, RECORD).collect()
    rows = _rows(tmp_path / "n.parquet").with_columns(pl.col("ts").dt.epoch("ns"))
    assert sorted(rows.columns) == sorted(union.columns) and "extra_n" in rows.columns
    assert rows.equals(union.select(rows.columns))


@pytest.mark.parametrize("sample", ["retry-amplification", "interconnect-capacity-inaccessibility"])
def test_a_normalized_sample_analyzes_to_the_same_report(sample, tmp_path):
    path = REPO / "sample_traces" / f"{sample}.parquet"
    normalize(path, tmp_path / "n.parquet", budget_bytes=4_000_000)
    assert _report(tmp_path / "n.parquet") == _report(path)


def test_csv_and_per_layer_traces_analyze_the_same_once_normalized(shuffled, tmp_path):
    frame = make_trace(TraceSpec(n_requests=120, seed=8))
    csv = tmp_path / "t.csv"
    write(frame, csv)
    layers = tmp_path / "layers"
    layers.mkdir()
    for (layer,), part in frame.partition_by("layer", as_dict=True).items():
        write(part.drop("layer"), layers / f"{layer}.parquet")
    for source in (csv, layers, shuffled):
        out = tmp_path / f"{source.name}-n.parquet"
        normalize(source, out, budget_bytes=30_000)
        assert _report(out) == _report(source)


def test_inputs_are_untouched_and_provenance_travels_with_the_rows(trace_file, tmp_path):
    sidecar = tmp_path / "trace.parquet.provenance.json"
    sidecar.write_text(_a_provenance())
    before = file_digest(trace_file), file_digest(sidecar)
    done = normalize(trace_file, tmp_path / "out.parquet")
    assert (file_digest(trace_file), file_digest(sidecar)) == before
    assert done.provenance_file == tmp_path / "out.parquet.provenance.json"
    assert done.provenance_file.read_text() == sidecar.read_text()
    assert analyze(str(tmp_path / "out.parquet")).report.provenance == analyze(str(trace_file)).report.provenance


def _a_provenance() -> str:
    from coherence_diag.model import Provenance, SourceUse
    from coherence_diag.model.provenance import to_dict

    use = SourceUse("azure-llm", "x.csv", 10, 10, "absolute", 0.0, ("latency",), (), {})
    return json.dumps(to_dict(Provenance((use,), ())))


def test_cli_normalize_writes_the_file_and_refuses_bad_input_without_output(run_cli, trace_file, tmp_path):
    out = tmp_path / "n.parquet"
    result = run_cli("normalize", trace_file, "-o", out, "--memory-budget", "64MiB", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert "sorted by (layer, ts)" in result.stderr and out.exists()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    for args in (("normalize", bad, "-o", tmp_path / "x.parquet"), ("normalize", trace_file, "-o", tmp_path / "x.parquet", "--memory-budget", "lots")):
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stderr.startswith("error: ")
        assert not (tmp_path / "x.parquet").exists()
    assert run_cli("normalize", trace_file, "-o", trace_file).exit_code == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["gpu", "queue", "scheduler", None]), st.integers(0, 30), st.integers(1, 50)), min_size=1, max_size=40),
    st.integers(1, 120),
)
def test_chunks_are_runs_of_one_layers_seconds_within_the_limit(counts, limit):
    table = pl.DataFrame(counts, schema={"layer": pl.String, "_bucket": pl.Int64, "len": pl.UInt32}, orient="row").unique(["layer", "_bucket"])
    chunks = chunk_table(table, limit)
    assert chunks.height == table.height
    assert chunks.equals(chunks.sort("layer", "_bucket", nulls_last=True))
    assert chunks["_chunk"].to_list() == sorted(chunks["_chunk"].to_list())
    per_chunk = chunks.group_by("_chunk").agg(pl.col("layer").n_unique())
    assert (per_chunk["layer"] == 1).all()
    # A chunk passes the limit only by its last second: every second of it starts within the limit.
    starts = chunks.with_columns((pl.col("len").cum_sum() - pl.col("len")).over("_chunk").alias("before"))
    assert (starts["before"] < limit).all()
    # and no more chunks than the limit needs: at most ceil(rows / limit) per layer
    per_layer = chunks.group_by("layer").agg(pl.col("_chunk").n_unique().alias("n"), pl.col("len").sum())
    assert (per_layer["n"] <= (per_layer["len"] + limit - 1) // limit).all()
