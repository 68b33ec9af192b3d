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


_WINDOW_MS = 5


@settings(max_examples=200, deadline=None)
@given(st.lists(_span, min_size=1, max_size=25))
def test_busy_time_per_window_is_the_length_of_the_union_inside_it(spans):
    """Against a brute force over whole milliseconds: per device and window, the milliseconds
    covered by at least one of its spans (spans cross windows, overlap and touch)."""
    gpu = pl.DataFrame(
        {
            "ts": [s * 1_000_000 for _, s, _ in spans],
            "event": ["exec"] * len(spans),
            "device": [d for d, _, _ in spans],
            "dur_ms": [float(n) for *_, n in spans],
        },
        schema={"ts": pl.Int64, "event": pl.Categorical, "device": pl.Categorical, "dur_ms": pl.Float64},
    )
    busy = timeseries.busy_intervals(gpu.lazy(), _WINDOW_MS * 1_000_000).collect()
    got = {(str(d), w // 1_000_000): ms for d, w, ms in busy.select("device", "window_start_ns", "busy_ms").iter_rows()}
    covered: dict[str, set[int]] = {}
    for device, start, length in spans:
        covered.setdefault(device, set()).update(range(start, start + length))
    expected: dict[tuple[str, int], float] = {}
    for device, instants in covered.items():
        for t in instants:
            key = (device, t // _WINDOW_MS * _WINDOW_MS)
            expected[key] = expected.get(key, 0.0) + 1.0
    assert got == expected
