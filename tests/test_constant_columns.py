"""Columns with one value on every row of a layer are kept as literal (scalar) columns after
validation: the layer must read exactly as before, value for value and bit for bit."""

from __future__ import annotations

import math

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from coherence_diag import validate

_floats = st.sampled_from([0.0, -0.0, 1.5, None])
_ints = st.sampled_from([0, 7, None])
_names = st.sampled_from(["onprem", "cloud-a", None])
_flags = st.sampled_from([True, False, None])


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"slo_ms": pl.Float64, "attempt": pl.Int64, "env": pl.String, "virtualized": pl.Boolean},
        orient="row",
    ).with_columns(pl.col("env").cast(pl.Categorical))


def _signs(frame: pl.DataFrame) -> list[float | None]:
    return [None if x is None else math.copysign(1.0, x) for x in frame["slo_ms"].to_list()]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_floats, _ints, _names, _flags), min_size=1, max_size=6))
def test_layer_reads_the_same_with_constant_columns_as_literals(rows):
    frame = _frame(rows)
    kept = validate.constants_as_scalars(frame)
    assert_frame_equal(kept, frame, check_exact=True)
    assert _signs(kept) == _signs(frame)  # -0.0 is not collapsed into 0.0
    # Operations downstream see the same values through filters and group-bys.
    half = pl.int_range(pl.len()) % 2 == 0
    assert_frame_equal(kept.filter(half), frame.filter(half), check_exact=True)
    assert_frame_equal(
        kept.group_by("env", maintain_order=True).agg(pl.col("attempt").sum()),
        frame.group_by("env", maintain_order=True).agg(pl.col("attempt").sum()),
        check_exact=True,
    )


def test_one_value_is_decided_on_codes_bits_and_nulls():
    assert validate._one_value(pl.Series([2.5, 2.5]))
    assert not validate._one_value(pl.Series([0.0, -0.0]))
    assert not validate._one_value(pl.Series([1.0, float("nan")]))
    assert validate._one_value(pl.Series(["a", "a"]).cast(pl.Categorical))
    assert not validate._one_value(pl.Series(["a", "b"]).cast(pl.Categorical))
