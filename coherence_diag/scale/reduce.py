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

import polars as pl

from coherence_diag import paths, schema, validate
from coherence_diag.errors import InputError, TraceError
from coherence_diag.ingest import FileSource, open_trace
from coherence_diag.ingest.source import AUDIT_SCHEMA, EXAMPLES, ORIGIN, RECORD, empty_audit
from coherence_diag.projection import project_layers
from coherence_diag.request_keys import KEY
from coherence_diag.scale.executors import Executor, InProcess
from coherence_diag.scale.footers import read_footers
from coherence_diag.scale.plan import Unit, UnitPlan, plan_units
from coherence_diag.scale.slices import RowFilter, RowsSource, SliceSource
from coherence_diag.scale.units import (
    Census,
    LayerPart,
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
    # row), and the summary of every validated row (summary.py); else empty and None.
    layers: dict[str, pl.DataFrame] = field(default_factory=dict)
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
    results = run.map(unit_task, tasks, progress=on_task, label="units")
    stitched = stitch(source, [r.crossing_rows for r in results if r.crossing_rows is not None], devices, with_layers)
    reduced = reduce(source, [*results, stitched], devices, plan, crossing.len(), max_bad_fraction)
    if with_layers:
        parts = (*results, stitched)
        # Projected again: parts without a read event of a layer each kept its first row.
        reduced.layers = project_layers(merge_layers([r.layers for r in parts]))
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


def merge_layers(parts: Sequence[dict[str, LayerPart]]) -> dict[str, pl.DataFrame]:
    """Each layer's validated rows from every part, in the trace's order (the single pass reads
    the files in order and each file's rows in order: ORIGIN, RECORD), as `validate` keeps them.
    One layer at a time, one column at a time, each part's column released once gathered: the
    peak is the merged layers plus one column, not two copies of everything."""
    layers: dict[str, pl.DataFrame] = {}
    for layer in schema.LAYERS:
        found = [p.pop(layer) for p in parts if layer in p]
        if not found:
            continue
        order = pl.concat([f.frame.select(pl.col(ORIGIN).cast(pl.UInt64) * 2**32 + pl.col(RECORD).cast(pl.UInt64)) for f in found])
        perm = order.to_series().arg_sort()
        in_order = bool((perm.diff().drop_nulls() == 1).all())
        columns = []
        for name, dtype in found[0].schema.items():
            if name in (ORIGIN, RECORD):
                continue
            if all(name not in f.frame.columns for f in found):
                columns.append(pl.repeat(None, len(perm), dtype=dtype, eager=True).alias(name))
                continue
            pieces = [f.frame[name] if name in f.frame.columns else pl.repeat(None, f.height, dtype=dtype, eager=True).alias(name) for f in found]
            column = pl.concat(pieces, rechunk=in_order)
            columns.append(column if in_order else column.gather(perm))
            for f in found:  # this column's pieces are no longer needed
                if name in f.frame.columns:
                    f.frame = f.frame.drop(name)
        layers[layer] = validate.constants_as_scalars(pl.DataFrame(columns))
    return layers


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
) -> Reduced:
    unmapped = source.unmapped()
    rows_total = sum(r.rows_total for r in results) + int(unmapped["rows"].sum())
    audit = merge_audits([unmapped, *(r.audit for r in results)])
    rows_by_layer = _sum_by_layer([r.rows_by_layer for r in results])
    usable_by_layer = _sum_by_layer([r.usable_by_layer for r in results])
    validate.enforce_budget(audit, rows_total, sum(usable_by_layer.values()), source.display_path, max_bad_fraction)
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
