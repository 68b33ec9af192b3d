"""Duplicate rows: exactly the later copies of an earlier row are set aside, whatever the path
validation takes (sorted pairs, shared timestamps, distinct time and entity, row hashes)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag import request_keys, validate

T0 = 1_767_225_600_000_000_000


def _expected(frame: pl.DataFrame) -> list[bool]:
    return frame.select(~pl.struct(frame.columns).is_first_distinct()).to_series().to_list()


def _scheduler(rows: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ts": [T0 + t for t, *_ in rows],
            "event": [e for _, e, _, _ in rows],
            "request_id": [r for _, _, r, _ in rows],
            "attempt": [a for *_, a in rows],
            "device": ["g0"] * len(rows),
        },
        schema={"ts": pl.Int64, "event": pl.String, "request_id": pl.String, "attempt": pl.Int64, "device": pl.String},
    )
    return frame.with_columns(pl.col("event", "device").cast(pl.Categorical), request_keys.hashed_key(pl.col("request_id")))


_row = st.tuples(st.integers(0, 12), st.sampled_from(["arrive", "dispatch", "complete"]), st.sampled_from(["r1", "r2"]), st.integers(0, 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(_row, min_size=0, max_size=14), st.booleans())
def test_later_copies_and_only_they_are_flagged(rows, sort):
    frame = _scheduler(sorted(rows) if sort else rows)
    assert validate._later_duplicates(frame, "scheduler").to_list() == _expected(frame)


def test_sorted_layers_without_three_equal_timestamps_take_the_pair_path():
    frame = _scheduler([(1, "arrive", "r1", 0), (1, "arrive", "r1", 0), (2, "complete", "r1", 0), (3, "arrive", "r2", 0), (3, "dispatch", "r2", 0)])
    paired = validate._duplicates_in_pairs(frame, ["ts", "event", request_keys.KEY])
    assert paired is not None and paired.to_list() == _expected(frame) == [False, True, False, False, False]


def test_sorted_neighbours_that_differ_in_one_column_are_not_duplicates():
    frame = _scheduler([(1, "arrive", "r1", 0), (1, "arrive", "r1", 1), (2, "complete", "r1", 0), (2, "complete", "r1", 0)])
    assert validate._later_duplicates(frame, "scheduler").to_list() == [False, False, False, True]


def _gpu(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"ts": [T0 + t for t, _, _ in rows], "event": [e for _, e, _ in rows], "device": [d for *_, d in rows]},
        schema={"ts": pl.Int64, "event": pl.String, "device": pl.String},
    )
    no_request = pl.lit(None, pl.String)  # samples have none; exec rows' keys do not matter here
    return frame.with_columns(
        pl.col("event", "device").cast(pl.Categorical),
        request_keys.hashed_key(no_request),
        pl.lit(None, pl.Float64).alias("dur_ms"),
        pl.lit(0.5).alias("gpu_util"),
    )


_gpu_row = st.tuples(st.integers(0, 6), st.sampled_from(["sample", "exec"]), st.sampled_from(["g0", "g1"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_gpu_row, min_size=0, max_size=12), st.booleans())
def test_gpu_rows_in_time_and_device_order_per_event_find_the_same_copies(rows, ordered):
    """GPU rows whose events interleave, each event in (time, device) order or not at all:
    exactly the later copies, whichever way the check goes."""
    if ordered:
        by_event = {e: sorted(r for r in rows if r[1] == e) for e in ("sample", "exec")}
        rows = [r for pair in zip(by_event["sample"], by_event["exec"]) for r in pair] + by_event["sample"][len(by_event["exec"]):] + by_event["exec"][len(by_event["sample"]):]
    frame = _gpu(rows)
    assert validate._later_duplicates(frame, "gpu").to_list() == _expected(frame)


def _no_duplicates_by_key(frame: pl.DataFrame) -> bool:
    key = validate._time_entity_key(frame, "gpu")
    return key is not None and validate._rises_within_each_event(key, frame["event"])


def test_an_exec_and_a_sample_at_one_instant_on_one_device_are_not_duplicates():
    frame = _gpu([(1, "sample", "g0"), (1, "exec", "g0"), (2, "sample", "g0"), (2, "exec", "g1")])
    assert _no_duplicates_by_key(frame)
    assert not _no_duplicates_by_key(_gpu([(1, "sample", "g0"), (2, "sample", "g0"), (1, "sample", "g0")]))
