"""Tiling: K shifted copies of one slice, one shard each, with request ids unique per copy; the
analysis of the tiled trace sees K times the slice's requests."""

from __future__ import annotations

import polars as pl
import pytest

from coherence_diag import analyze
from coherence_diag.errors import InputError
from coherence_diag.simulate.tiling import tile_trace
from tests.tracegen import TraceSpec, make_trace

S = 1_000_000_000


@pytest.fixture
def slice_file(tmp_path):
    path = tmp_path / "slice.parquet"
    make_trace(TraceSpec(n_requests=80, seed=4)).write_parquet(path)
    return path


def test_copies_are_the_slice_shifted_by_a_window_aligned_span_with_unique_ids(slice_file, tmp_path):
    tiled = tile_trace(slice_file, tmp_path / "big", 3, gap_s=60, align_s=60)
    piece = pl.read_parquet(slice_file)
    assert [p.name for p in sorted((tmp_path / "big").iterdir())] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert tiled.rows == 3 * piece.height
    span_end = (piece["ts"].dt.epoch("ns") + (piece["dur_ms"].fill_null(0) * 1e6).cast(pl.Int64)).max()
    assert tiled.shift_ns % (60 * S) == 0 and tiled.shift_ns >= span_end - piece["ts"].dt.epoch("ns").min() + 60 * S
    ids = set()
    for k, shard in enumerate(tiled.shards):
        copy = pl.read_parquet(shard)
        assert copy.height == piece.height
        back = copy.with_columns(pl.col("ts") - pl.duration(nanoseconds=k * tiled.shift_ns), pl.col("request_id").str.strip_prefix(f"t{k:04d}-"))
        assert back.equals(piece)  # the slice itself, but for the shift and the prefix
        copy_ids = set(copy["request_id"].drop_nulls())
        assert not copy_ids & ids
        ids |= copy_ids
    requests = analyze(str(tmp_path / "big")).report.trace.requests
    assert requests == 3 * analyze(str(slice_file)).report.trace.requests


def test_bad_arguments_write_nothing(slice_file, tmp_path):
    for copies in (0, -1, True):
        with pytest.raises(InputError, match="copies"):
            tile_trace(slice_file, tmp_path / "big", copies)
    with pytest.raises(InputError, match="gap_s"):
        tile_trace(slice_file, tmp_path / "big", 2, align_s=0)
    assert not (tmp_path / "big").exists()
