"""Work-unit tasks: pure functions of (trace reference, unit, a few shared values) returning
small picklable results, the same in every executor (executors.py). docs/scale.md says why the
design is exact; reduce.py runs them in order and puts the results together.

Two passes over each unit's time slice:

1. `census`: the request keys the unit's rows of ROUTED_LAYERS carry (with row counts), its rows,
   its (layer, event) pairs and its raw `device_info` rows. A request whose keys appear in more
   than one unit crosses a unit edge. Deciding this from the spec instead (arrival and a terminal
   event inside the unit) is not possible: a `retry` may follow a `timeout` or `drop` at any
   later time with the same id, and exec or transfer rows carry no bound either. The census
   reads four narrow columns; it is exact whatever the rows say.
2. `unit_task`: `validate.validate_rows` on the slice without the crossing requests' rows, the
   request paths (paths.request_paths, unchanged) of the requests inside it, with the trace's
   validated `device_info` rows and the hypervisor rows of the look-back; and the raw rows of
   the crossing requests, for the stitch.

Every row of the trace goes to exactly one validation call (a unit, the stitch, or the rows with
a null `ts`), and rows validation compares with each other go together: exact duplicates (same
`ts`, same request), and a request's scheduler rows (the completion-before-arrival check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from coherence_diag import paths, request_keys, schema, validate
from coherence_diag.ingest import FileSource, open_trace
from coherence_diag.ingest.source import ORIGIN, RECORD, empty_audit
from coherence_diag.projection import project_layers
from coherence_diag.request_keys import KEY
from coherence_diag.scale.plan import Unit
from coherence_diag.scale.slices import ROUTED_LAYERS, RowFilter, RowsSource, SliceSource, routed_to
from coherence_diag.scale.spill import SpilledParts
from coherence_diag.summary import RowSummary, summarize


@dataclass(frozen=True)
class TraceRef:
    """What a worker needs to open the trace: its path (every worker must be able to read it)."""

    path: str

    def open(self) -> FileSource:
        return open_trace(self.path)


@dataclass
class Census:
    rows: int  # rows of the slice
    keys: pl.DataFrame  # request_key, rows: per request key of ROUTED_LAYERS rows
    pairs: pl.DataFrame  # layer, event: distinct, over rows of known layers
    device_rows: pl.DataFrame  # raw gpu `device_info` rows (canonical, ORIGIN, RECORD)


@dataclass
class LayerPart:
    """A unit's validated rows of one layer, without the columns that are null on all of them (a
    layer's columns absent from the trace, or filled by other layers: most of a layer's columns),
    which are put back, as nulls, only where another part has values (spill.spill_layers)."""

    frame: pl.DataFrame  # the columns with a value on some row, ORIGIN and RECORD
    schema: dict[str, pl.DataType]  # every column of the layer, in order

    @classmethod
    def of(cls, frame: pl.DataFrame) -> LayerPart:
        kept = [c.name for c in frame.iter_columns() if c.name in (ORIGIN, RECORD) or c.null_count() < frame.height]
        return cls(frame.select(kept), dict(frame.schema))

    @property
    def height(self) -> int:
        return self.frame.height


@dataclass
class UnitResult:
    rows_total: int = 0
    rows_by_layer: dict[str, int] = field(default_factory=dict)  # rows read per known layer
    usable_by_layer: dict[str, int] = field(default_factory=dict)  # rows kept per layer
    audit: pl.DataFrame = field(default_factory=empty_audit)
    requests: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=paths.PATH_SCHEMA))
    crossing_rows: pl.DataFrame | None = None  # raw rows of the crossing requests (units only)
    # The validated rows of each layer read, with ORIGIN and RECORD (their place in the trace),
    # for the analysis past the request paths; only when the run asks for them (`with_layers`).
    layers: dict[str, LayerPart] = field(default_factory=dict)
    summary: RowSummary | None = None  # of the validated rows, before their projection
    # Where spill.Spill.take wrote `requests` and `layers` (then emptied) as the result arrived.
    spilled: SpilledParts | None = None


def slice_rows(unit: Unit | None) -> RowFilter:
    """A unit's time slice, or (None) the rows whose `ts` is null, which belong to no slice."""
    return RowFilter(null_ts=True) if unit is None else RowFilter(spans=((unit.start_ns, unit.end_ns),))


def census(ref: TraceRef, unit: Unit | None) -> Census:
    source = ref.open()
    lf = SliceSource(source, slice_rows(unit)).scan()
    known = pl.col("layer").is_in(list(schema.LAYERS))
    plans = [lf.select(pl.len()), lf.filter(known).select("layer", "event").unique()]
    if unit is not None and "request_id" in source.columns:
        routed = pl.col("layer").is_in(list(ROUTED_LAYERS)) & pl.col("request_id").is_not_null()
        plans.append(lf.filter(routed).select(request_keys.hashed_key(pl.col("request_id"))).group_by(KEY).agg(pl.len().alias("rows")))
    frames = collect_all(source, plans)
    count, pairs = frames[0], frames[1]
    keys = frames[2] if len(frames) == 3 else pl.DataFrame(schema={KEY: pl.Int128, "rows": pl.UInt32})
    # The device rows only where the slice has some: reading them decodes every column of the
    # slice's gpu row groups (1 GiB transient on a 2M-row slice), and most slices have none.
    is_info = (pl.col("layer") == "gpu") & (pl.col("event") == "device_info")
    has_info = unit is not None and not pairs.filter(is_info).is_empty()
    devices = collect_all(source, [lf.filter(is_info)])[0] if has_info else lf.head(0).collect()
    return Census(int(count.item()), keys, pairs, devices)


def unit_task(
    ref: TraceRef, unit: Unit | None, crossing: pl.Series, devices: pl.DataFrame | None, own_rows: int, with_layers: bool = False
) -> UnitResult:
    """Validation counters and audit of the unit's `own_rows` rows (those not of crossing
    requests), the request table of the requests inside it, and the crossing requests' raw rows
    (`with_layers`: and the validated rows, in UnitResult.layers).
    `unit` None: the rows with a null `ts` (all set aside; counters and audit only)."""
    source = ref.open()
    rows = slice_rows(unit)
    # The rows with a null ts go nowhere else, whatever their request (set aside, row by row).
    own = SliceSource(source, rows, without_keys=None if unit is None else crossing)
    trace = validate.validate_rows(own, keep_order=with_layers) if own_rows else None
    result = UnitResult() if trace is None else counters(trace)
    if unit is None:
        if with_layers and trace is not None:  # layers whose rows all lack a ts are still layers
            keep_projected(result, trace)
        return result
    if not crossing.is_empty() and "request_id" in source.columns:
        lf = source.scan(where=rows.stored).filter(rows.canonical() & routed_to(crossing))
        result.crossing_rows = collect_all(source, [lf])[0]
    else:
        result.crossing_rows = source.scan().head(0).collect()
    if trace is None:
        return result
    lookback = validated_layer(SliceSource(source, RowFilter(spans=((unit.read_from_ns, unit.start_ns),), layers=("hypervisor",))), "hypervisor")
    result.requests = request_table(trace.layers, devices, lookback)
    if with_layers:
        keep_projected(result, trace)
    return result


def keep_projected(result: UnitResult, trace: validate.ValidatedTrace) -> None:
    """Into `result` (whose request table is built): the summary of the part's validated rows
    and their projection (projection.py), with each row's place in the trace (ORIGIN, RECORD)."""
    result.summary = summarize(trace.layers, result.requests)
    result.layers = {name: LayerPart.of(frame) for name, frame in project_layers(trace.layers, keep=(ORIGIN, RECORD)).items()}


# Plans over one slice are not merged: Polars would read the slice once with the union of their
# columns and keep it in memory (the census of a 4.5M-row unit of the bench trace peaked at
# 2,990 MiB, every column of the slice for its `device_info` rows; 335 MiB, and 3x faster, apart).
_SEPARATE_PLANS = pl.QueryOptFlags(comm_subplan_elim=False)


def collect_all(source: FileSource, plans: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Collect, with a decode error attributed to the file that causes it (as validation does)."""
    try:
        return pl.collect_all(plans, optimizations=_SEPARATE_PLANS)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise source.read_error(exc) from None


def counters(trace: validate.ValidatedTrace) -> UnitResult:
    """The counters and audit of a validated part."""
    return UnitResult(
        rows_total=trace.rows_total,
        rows_by_layer=dict(trace.rows_by_layer),
        usable_by_layer={layer: frame.height for layer, frame in trace.layers.items()},
        audit=trace.audit,
    )


def request_table(layers: Mapping[str, pl.DataFrame], devices: pl.DataFrame | None, hypervisor: pl.DataFrame | None) -> pl.DataFrame:
    """paths.request_paths of `layers`, with the trace's validated `device_info` rows in place of
    the slice's own and `hypervisor` rows (the look-back) before the slice's."""
    layers = {name: frame.drop(ORIGIN, RECORD, strict=False) for name, frame in layers.items()}
    gpu = [frame.filter(pl.col("event") != "device_info") for frame in (layers.pop("gpu", None),) if frame is not None]
    gpu += [devices] if devices is not None else []
    if gpu and (joined := pl.concat(gpu, how="vertical")).height:
        layers["gpu"] = joined
    hyper = [frame for frame in (hypervisor, layers.pop("hypervisor", None)) if frame is not None]
    if hyper and (joined := pl.concat(hyper, how="vertical")).height:
        layers["hypervisor"] = joined
    return paths.request_paths(layers)


def validated_layer(source: SliceSource | RowsSource, layer: str) -> pl.DataFrame | None:
    """The clean rows of `layer` in `source` (None when it has none)."""
    trace = _validated_trace(source)
    return None if trace is None else trace.layers.get(layer)


def _validated_trace(source: SliceSource | RowsSource) -> validate.ValidatedTrace | None:
    # validate_rows rejects a source without rows: a look-back or a stitch may have none.
    empty = source.scan().select(pl.len()).collect().item() == 0 if isinstance(source, SliceSource) else source.frame.is_empty()
    return None if empty else validate.validate_rows(source)
