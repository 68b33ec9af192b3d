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

from coherence_diag import metrics, paths


@dataclass(frozen=True)
class RowSummary:
    span: metrics.ObservationSpan
    envs: frozenset[str]
    # paths.request_id_rows (None: no scheduler layer); lazy when work units left them on disk.
    request_ids: pl.DataFrame | pl.LazyFrame | None


def summarize(layers: Mapping[str, pl.DataFrame], requests: pl.DataFrame) -> RowSummary:
    """The summary of validated `layers` (whole, before projection) and their request table."""
    envs: set[str] = set()
    for frame in layers.values():
        if "env" in frame.columns:
            envs.update(frame["env"].drop_nulls().unique().cast(pl.String).to_list())
    return RowSummary(metrics.observation_span(layers), frozenset(envs), paths.request_id_rows(layers.get("scheduler"), requests))


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
