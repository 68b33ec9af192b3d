"""`timeseries.all_distinct`: the shortcut for strictly rising keys gives the answer n_unique gives."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from coherence_diag.timeseries import all_distinct


@given(st.lists(st.integers(-5, 5), max_size=12), st.booleans())
def test_all_distinct_is_n_unique_equals_length(values, sort):
    key = pl.Series(sorted(values) if sort else values, dtype=pl.Int64)
    assert all_distinct(key) == (key.n_unique() == key.len())


def test_a_rising_key_with_a_repeat_is_not_distinct():
    assert all_distinct(pl.Series([1, 2, 3], dtype=pl.Int64))
    assert not all_distinct(pl.Series([1, 2, 2, 3], dtype=pl.Int64))
    assert not all_distinct(pl.Series([3, 1, 3], dtype=pl.Int64))
