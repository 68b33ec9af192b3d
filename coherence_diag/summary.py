"""What the analysis needs of every validated row, taken before projection.py drops the rows and
columns no later reader reads: the observation span, the `env` values and the request id rows.

Summaries of disjoint parts of a trace (work units and the stitch, scale/units.py) merge exactly:
the span by min/max, the env values by union, the id rows by concatenation (each request's rows
lie in one part, so `paths.request_id_rows` of each part keeps what it keeps of the whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import polars as pl

from coherence_diag import metrics, paths, validate


@dataclass(frozen=True)
class RowSummary:
    span: metrics.ObservationSpan
    envs: frozenset[str]
    # paths.request_id_rows (None: no scheduler layer); lazy when work units left them on disk.
    request_ids: pl.DataFrame | pl.LazyFrame | None


@dataclass
class PathsRead:
    """A trace read for the analysis, its request paths built: the validated trace with its layers
    already projected (projection.py), its request table, and the summary of every validated row.
    The single pass (analysis.read_single_pass) and work units (scale/read.py) both give one."""

    trace: validate.ValidatedTrace
    requests: pl.DataFrame
    summary: RowSummary


def summarize(layers: Mapping[str, pl.DataFrame], requests: pl.DataFrame | None) -> RowSummary:
    """The summary of validated `layers` (whole, before projection) and their request table."""
    return merge([summarize_layer(name, frame, requests) for name, frame in layers.items()])


def summarize_layer(name: str, frame: pl.DataFrame, requests: pl.DataFrame | None) -> RowSummary:
    """The summary of one validated layer (whole); `requests`: the request table, or any frame with
    its `request_key` and `arrive_ns` (paths.scheduler_lifecycle), read for the scheduler layer."""
    envs = frame["env"].drop_nulls().unique().cast(pl.String).to_list() if "env" in frame.columns else []
    ids = paths.request_id_rows(frame, requests) if name == "scheduler" and requests is not None else None
    return RowSummary(metrics.observation_span({name: frame}), frozenset(envs), ids)


def merge(parts: Sequence[RowSummary]) -> RowSummary:
    """The summary of the union of disjoint parts."""
    spans = [p.span for p in parts]
    ids = [p.request_ids for p in parts if p.request_ids is not None]
    return RowSummary(
        metrics.ObservationSpan(
            _least([s.start_ns for s in spans]),
            _most([s.end_ns for s in spans]),
            _least([s.scheduler_start_ns for s in spans]),
            _most([s.scheduler_end_ns for s in spans]),
        ),
        frozenset().union(*(p.envs for p in parts)),
        _concat(ids),
    )


def _concat(frames: list[pl.DataFrame | pl.LazyFrame]) -> pl.DataFrame | pl.LazyFrame | None:
    """The frames one after another: lazy if any is (its rows stay on disk until read)."""
    if not frames:
        return None
    if all(isinstance(f, pl.DataFrame) for f in frames):
        return pl.concat(cast(list[pl.DataFrame], frames), how="vertical")
    return pl.concat([f.lazy() for f in frames], how="vertical")


def _least(values: list[int | None]) -> int | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _most(values: list[int | None]) -> int | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None
