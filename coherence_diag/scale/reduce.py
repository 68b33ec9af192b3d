"""Stitch and reduce: a trace's work units (plan.py) run as unit tasks (units.py) on an executor
(executors.py), put together into the tables a single pass builds, exactly (docs/scale.md):

- the request table: the requests inside units, and the crossing requests, whose gathered rows
  go through the same validation and `paths.request_paths` (with the hypervisor samples their
  dispatches' steal as-of join needs, read for them), concatenated and sorted by `request_key`
  (the single pass has no defined row order: its group-bys are hash-based);
- the device table: `paths.device_table` of the trace's validated `device_info` rows;
- validation: rows and usable rows summed per layer, the audit's rows summed and its example
  rows merged per (file, layer, reason, column), and --max-bad-fraction checked on the sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import polars as pl

from coherence_diag import paths, schema, validate
from coherence_diag.errors import InputError, TraceError
from coherence_diag.ingest import FileSource, open_trace
from coherence_diag.ingest.source import AUDIT_SCHEMA, EXAMPLES, ORIGIN, RECORD, empty_audit
from coherence_diag.layer_store import Layers, SpillDirectory
from coherence_diag.request_keys import KEY
from coherence_diag.scale.executors import Executor, InProcess
from coherence_diag.scale.footers import read_footers
from coherence_diag.scale.plan import Unit, UnitPlan, plan_units
from coherence_diag.scale.slices import RowFilter, RowsSource, SliceSource
from coherence_diag.scale.spill import Spill, gather_requests, spill_layers
from coherence_diag.scale.units import (
    Census,
    TraceRef,
    UnitResult,
    census,
    counters,
    keep_projected,
    request_table,
    unit_task,
    validated_layer,
)
from coherence_diag.summary import RowSummary
from coherence_diag.summary import merge as merge_summaries
from coherence_diag.timeseries import DEFAULT_WINDOW_S

# Past this many separate look-back spans, the stitch reads fewer, wider ones (a superset of
# hypervisor rows: samples outside a dispatch's tolerance are never matched, so still exact).
MAX_STEAL_SPANS = 64


@dataclass(frozen=True)
class UnitTick:
    """Progress of a run of units, after each finished task (for a progress bar)."""

    stage: str  # "census" (the first pass over every unit) or "units"
    done: int  # tasks of this stage finished
    total: int  # tasks of this stage
    rows_done: int  # rows read so far, over both passes
    rows_total: int  # rows both passes read (twice the trace's rows)


UnitProgress = Callable[[UnitTick], None]


@dataclass
class Reduced:
    """The tables a single pass builds, from work units."""

    requests: pl.DataFrame  # paths.PATH_SCHEMA, sorted by request_key
    devices: pl.DataFrame  # paths.device_table, sorted by device name
    rows_total: int
    rows_by_layer: dict[str, int]  # rows read per known layer (validate.ValidatedTrace.rows_by_layer)
    usable_by_layer: dict[str, int]  # rows kept per layer (the heights of its `layers`)
    audit: pl.DataFrame  # as validate.ValidatedTrace.audit
    plan: UnitPlan
    crossing_requests: int  # request keys whose rows span more than one unit (stitched)
    # With `with_layers`: validation's clean layers as the analysis reads them after the request
    # paths (projection.project_layers), the units' rows put back in the trace's order (file,
    # row), on disk (spill.py), and the summary of every validated row (summary.py); else empty
    # and None. The request table is then in the single pass's order (spill.gather_requests).
    layers: Layers = field(default_factory=Layers)
    summary: RowSummary | None = None


def run_units(
    path: str | Path,
    *,
    budget_bytes: int,
    window_s: float = DEFAULT_WINDOW_S,
    max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION,
    executor: Executor | None = None,
    progress: UnitProgress | None = None,
    with_layers: bool = False,
    plan: UnitPlan | None = None,
) -> Reduced:
    """Plan the trace at `path` into units within `budget_bytes` (or run `plan`), run them, stitch
    and reduce (`with_layers`: also gather the validated layers, for the analysis)."""
    source = open_trace(path)
    plan = plan or plan_trace(source, budget_bytes=budget_bytes, window_s=window_s)
    ref = TraceRef(str(path))
    run = executor or InProcess()
    slots: list[Unit | None] = [*plan.units, None]  # None: the rows whose ts is null
    on_task = _ticks(progress, 2 * plan.rows)
    counts = run.map(census, [(ref, u) for u in slots], progress=on_task, label="census")
    if sum(c.rows for c in counts) + int(source.unmapped()["rows"].sum()) == 0:
        raise TraceError(f"{source.display_path}: the trace has no rows", path=source.display_path)
    _require_columns(source, counts)
    crossing = _crossing(counts)
    devices = _devices(source, counts)
    shared_crossing, shared_devices = run.share(crossing), run.share(devices)
    # A unit whose every row is a crossing request's still gives those rows to the stitch.
    own = [c.rows - _rows_of(c.keys, crossing) for c in counts]
    tasks = [(ref, u, shared_crossing, shared_devices, n, with_layers) for u, n, c in zip(slots, own, counts) if c.rows]
    if not with_layers:
        results = run.map(unit_task, tasks, progress=on_task, label="units")
        stitched = stitch(source, [r.crossing_rows for r in results if r.crossing_rows is not None], devices)
        return reduce(source, [*results, stitched], devices, plan, crossing.len(), max_bad_fraction)
    # The analysis's tables go to disk as each unit's result arrives (spill.py): in memory, the
    # units' layers and request tables together would outgrow any budget on a large trace.
    spill = Spill(SpillDirectory())
    results = run.map(unit_task, tasks, progress=on_task, label="units", keep=spill.take)
    stitched = spill.take(stitch(source, [r.crossing_rows for r in results if r.crossing_rows is not None], devices, with_layers))
    parts = cast(list[UnitResult], [*results, stitched])
    for r in parts:
        r.crossing_rows = None  # stitched: no longer needed
    spilled = [r.spilled for r in parts if r.spilled is not None]
    layers = spill_layers([s.layers for s in spilled], spill.directory)
    requests = gather_requests([s.requests for s in spilled])
    spill.drop_parts()
    reduced = reduce(source, parts, devices, plan, crossing.len(), max_bad_fraction, requests=requests)
    reduced.layers = layers
    reduced.summary = merge_summaries([r.summary for r in parts if r.summary is not None])
    return reduced


def _ticks(progress: UnitProgress | None, rows_total: int) -> Callable[[str, int, int, object], None] | None:
    """The executors' per-task callback, counting the rows each finished task read."""
    if progress is None:
        return None
    rows_done = 0

    def on_task(stage: str, done: int, total: int, result: object) -> None:
        nonlocal rows_done
        if isinstance(result, Census):
            rows_done += result.rows
        elif isinstance(result, UnitResult):
            rows_done += result.rows_total + (0 if result.crossing_rows is None else result.crossing_rows.height)
        progress(UnitTick(stage, done, total, rows_done, max(rows_total, rows_done)))

    return on_task


def plan_trace(source: FileSource, *, budget_bytes: int, window_s: float = DEFAULT_WINDOW_S) -> UnitPlan:
    """The trace's work units within `budget_bytes` (InputError when its files cannot be planned)."""
    plan = plan_units(read_footers(source), budget_bytes=budget_bytes, window_s=window_s)
    if plan.unplannable:
        raise InputError(f"{source.display_path}: cannot be split into work units: {plan.unplannable}")
    return plan


def stitch(source: FileSource, rows: Sequence[pl.DataFrame], devices: pl.DataFrame | None, with_layers: bool = False) -> UnitResult:
    """The crossing requests: their gathered rows validated and made into request paths."""
    frames = [f for f in rows if f.height]
    if not frames:
        return UnitResult()
    # In the trace's order (file, row), as the single pass sees them: ties (two dispatches at one
    # instant, an exact duplicate: the later one is set aside) are then resolved the same way.
    gathered = pl.concat(frames, how="vertical").sort(ORIGIN, RECORD)
    trace = validate.validate_rows(RowsSource(source, gathered), keep_order=with_layers)
    result = counters(trace)
    requests = request_table(trace.layers, devices, None)
    spans = steal_spans(requests)
    hyper = validated_layer(SliceSource(source, RowFilter(spans=spans, layers=("hypervisor",))), "hypervisor") if spans else None
    result.requests = requests if hyper is None else request_table(trace.layers, devices, hyper)
    if with_layers:
        keep_projected(result, trace)
    return result


def steal_spans(requests: pl.DataFrame) -> tuple[tuple[int, int], ...]:
    """[dispatch - tolerance, dispatch] of the requests with a host, merged: the hypervisor rows
    their steal as-of join can match (paths.ASOF_TOLERANCE_NS)."""
    at = requests.filter(pl.col("host").is_not_null() & pl.col("dispatch_ns").is_not_null()).select(
        (pl.col("dispatch_ns") - paths.ASOF_TOLERANCE_NS).alias("lo"), (pl.col("dispatch_ns") + 1).alias("hi")
    )
    if at.is_empty():
        return ()
    merged = (
        at.sort("lo")
        .with_columns((pl.col("lo") > pl.col("hi").cum_max().shift(1)).fill_null(True).cum_sum().alias("span"))
        .group_by("span")
        .agg(pl.col("lo").min(), pl.col("hi").max())
        .sort("span")
    )
    if merged.height > MAX_STEAL_SPANS:  # consecutive spans joined into MAX_STEAL_SPANS wider ones
        merged = (
            merged.with_columns((pl.int_range(pl.len()) * MAX_STEAL_SPANS // pl.len()).alias("span"))
            .group_by("span")
            .agg(pl.col("lo").min(), pl.col("hi").max())
            .sort("span")
        )
    return tuple(zip(merged["lo"].to_list(), merged["hi"].to_list()))


def reduce(
    source: FileSource,
    results: Sequence[UnitResult],
    devices: pl.DataFrame | None,
    plan: UnitPlan,
    crossing_requests: int,
    max_bad_fraction: float,
    *,
    requests: pl.DataFrame | None = None,
) -> Reduced:
    """The reduced tables of `results`; `requests`: their request table already gathered (else
    their tables concatenated and sorted by `request_key`)."""
    unmapped = source.unmapped()
    rows_total = sum(r.rows_total for r in results) + int(unmapped["rows"].sum())
    audit = merge_audits([unmapped, *(r.audit for r in results)])
    rows_by_layer = _sum_by_layer([r.rows_by_layer for r in results])
    usable_by_layer = _sum_by_layer([r.usable_by_layer for r in results])
    validate.enforce_budget(audit, rows_total, sum(usable_by_layer.values()), source.display_path, max_bad_fraction)
    if requests is None:
        requests = pl.concat([r.requests for r in results], how="vertical").sort(KEY)
    device_table = paths.device_table(devices).collect().sort(pl.col("device").cast(pl.String))
    return Reduced(requests, device_table, rows_total, rows_by_layer, usable_by_layer, audit, plan, crossing_requests)


def merge_audits(audits: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Audits of disjoint rows as one: rows summed, the smallest EXAMPLES example rows kept, in
    validation's order (file, layer, reason, column)."""
    found = [a for a in audits if a.height]
    if not found:
        return empty_audit()
    return (
        pl.concat(found, how="vertical_relaxed")
        .group_by("file", "layer", "reason", "column", "warning")
        .agg(pl.col("rows").sum(), pl.col("example_rows").explode().sort().head(EXAMPLES))
        .select([pl.col(c).cast(t) for c, t in AUDIT_SCHEMA.items()])
        .sort("file", "layer", "reason", "column")
    )


def _sum_by_layer(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    return {layer: sum(c.get(layer, 0) for c in counts) for layer in schema.LAYERS if any(layer in c for c in counts)}


def _require_columns(source: FileSource, counts: Sequence[Census]) -> None:
    """validate.require_columns over the whole trace's (layer, event) pairs: one error listing
    every missing column, as the single pass raises it."""
    pairs = pl.concat([c.pairs for c in counts], how="vertical").unique()
    layers = {layer: pairs.filter(pl.col("layer") == layer) for layer in pairs["layer"].unique().to_list()}
    validate.require_columns(source, layers, source.columns)


def _crossing(counts: Sequence[Census]) -> pl.Series:
    """Request keys found in more than one unit, sorted."""
    keys = pl.concat([c.keys.select(KEY) for c in counts], how="vertical")
    return keys.group_by(KEY).len().filter(pl.col("len") > 1)[KEY].sort()


def _rows_of(keys: pl.DataFrame, crossing: pl.Series) -> int:
    return int(keys.filter(pl.col(KEY).is_in(crossing.implode()))["rows"].sum())


def _devices(source: FileSource, counts: Sequence[Census]) -> pl.DataFrame | None:
    """The trace's validated `device_info` rows (in unit order: ties in `ts` keep file order)."""
    rows = [c.device_rows for c in counts if c.device_rows.height]
    return validated_layer(RowsSource(source, pl.concat(rows, how="vertical")), "gpu") if rows else None
