"""The request table's row order (inference first, completed first among them) and the feature
context's `inference` / `completed` tables taken from it: the same rows as a filter, always."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from coherence_diag import analyze
from coherence_diag.features.registry import leading_rows
from coherence_diag.paths import LEADING_ORDER, is_inference

SAMPLES = Path(__file__).resolve().parents[1] / "sample_traces"

_row = st.tuples(st.sampled_from(["inference", "batch", None]), st.sampled_from(["completed", "timeout", "unfinished"]))


def _requests(rows: list[tuple[str | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"n": range(len(rows)), "workload_class": [c for c, _ in rows], "outcome": [o for _, o in rows]},
        schema={"n": pl.Int64, "workload_class": pl.String, "outcome": pl.String},
    ).with_columns(pl.col("workload_class").cast(pl.Categorical))


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, max_size=12), st.booleans())
def test_leading_rows_are_the_filtered_rows_in_any_order(rows, ordered):
    frame = _requests(rows)
    if ordered:
        frame = frame.sort(LEADING_ORDER, maintain_order=True)
    inference = leading_rows(frame, is_inference())
    assert_frame_equal(inference, frame.filter(is_inference()), check_exact=True)
    completed = pl.col("outcome") == "completed"
    assert_frame_equal(leading_rows(inference, completed), inference.filter(completed), check_exact=True)


def test_request_table_lists_inference_then_completed_first():
    result = analyze(SAMPLES / "batch-scheduling-conflict.parquet")
    rank = result.paths.select(LEADING_ORDER.alias("rank"))["rank"]
    assert rank.is_sorted()
    assert rank.n_unique() >= 3  # batch jobs, completed and unfinished/timed-out inference requests
    ctx = result.context
    assert ctx is not None
    assert_frame_equal(ctx.completed, result.paths.filter(is_inference() & (pl.col("outcome") == "completed")), check_exact=True)
