"""Busy time: the union of each device's exec spans, the same whichever way it is computed."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag import timeseries

_span = st.tuples(st.sampled_from(["g0", "g1", "g2"]), st.integers(0, 50), st.integers(0, 20))


def _frame(spans: list[tuple[str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"device": [d for d, _, _ in spans], "start": [s for _, s, _ in spans], "end": [s + n for _, s, n in spans]},
        schema={"device": pl.String, "start": pl.Int64, "end": pl.Int64},
    ).with_columns(pl.col("device").cast(pl.Categorical))


def _segments(frame: pl.LazyFrame) -> list[tuple[str, int, int]]:
    return sorted(frame.select(pl.col("device").cast(pl.String), "start", "end").collect().iter_rows())


@settings(max_examples=200, deadline=None)
@given(st.lists(_span, min_size=1, max_size=25))
def test_packed_axis_segments_equal_per_device_segments(spans):
    frame = _frame(spans)
    assert _segments(timeseries._merged_spans_packed(frame)) == _segments(timeseries._merged_spans_per_device(frame.lazy()))


def test_overlapping_and_touching_spans_merge_and_gaps_split():
    frame = _frame([("g0", 0, 10), ("g0", 5, 10), ("g0", 15, 5), ("g0", 30, 1), ("g1", 0, 3)])
    assert _segments(timeseries._merged_spans_packed(frame)) == [("g0", 0, 20), ("g0", 30, 31), ("g1", 0, 3)]
