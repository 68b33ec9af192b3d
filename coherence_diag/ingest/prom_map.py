"""The mapping the metrics sources (`prometheus`, `dcgm`) share: samples of the long frame
(prom_read.py) -> trace rows for gauges, provenance summaries for counters and histograms (the
alias table, metric_names.py), and the audit of samples that map to nothing. Each source gives its
own entity rules (`Entities`: how its labels name queues, devices, hosts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from coherence_diag import schema
from coherence_diag.ingest.common import Mapped, not_the_source
from coherence_diag.ingest.metric_names import RUNNING, Alias, aliases_for
from coherence_diag.ingest.prom_read import METRIC, TS, VALUE, Samples, label, summaries
from coherence_diag.ingest.source import RECORD, audit_rows
from coherence_diag.model import ColumnOrigin

EXTRAS = {"model": ("model_name", "model"), "pod": ("pod",), "namespace": ("namespace",)}
_ALIAS = "__alias"
_COLUMN = "__column"
HISTOGRAM_NOTE = "latency histograms have no row form: summaries only; their quantiles are histogram estimates (interpolated in the bucket stated)"
COUNTER_NOTE = "event counters name no request: their increase per window is summarised, no rows (a drop is a restart: the value is the increase)"


@dataclass(frozen=True)
class Entities:
    """How one source names the entities of a sample, from its labels."""

    queue: pl.Expr | None  # None: the source has no queues
    device: pl.Expr
    host: pl.Expr
    queue_formula: str
    device_formula: str
    device_attributes: dict[str, tuple[pl.Expr, str]]  # device_info column -> (expression, label it is read from)


def first_label(frame: pl.DataFrame, names: Sequence[str]) -> pl.Expr:
    """The first of the labels present with a (non-empty) value on the row."""
    present = [pl.when(pl.col(label(n)) != "").then(pl.col(label(n))) for n in names if label(n) in frame.columns]
    return pl.coalesce(present) if present else pl.lit(None, pl.String)


def map_samples(path: Path, name: str, samples: Samples, entities: Entities) -> Mapped:
    """Samples -> trace rows (gauges), provenance summaries (counters, histograms) and the audit
    of what maps to nothing; the same for every metrics source, with its own entity rules."""
    aliases = aliases_for(name)
    table = pl.DataFrame(
        {
            _ALIAS: list(range(len(aliases))),
            "__layer": [a.layer for a in aliases],
            _COLUMN: [a.column for a in aliases],
            "__kind": [a.kind for a in aliases],
            "__scale": [a.scale for a in aliases],
            "__divisor": [a.divisor for a in aliases],
        },
        schema={_ALIAS: pl.Int64, "__layer": pl.String, _COLUMN: pl.String, "__kind": pl.String, "__scale": pl.Float64, "__divisor": pl.Float64},
    )
    frame = samples.frame.with_columns(_alias_of(samples.frame, aliases).alias(_ALIAS)).join(table, on=_ALIAS, how="left")
    known = frame.filter(pl.col(_ALIAS).is_not_null())
    created = pl.col(METRIC).str.ends_with("_created")  # a counter's or histogram's start time: not a measurement
    unknown = frame.filter(pl.col(_ALIAS).is_null() & ~created)
    if known.is_empty():
        found = sorted(frame[METRIC].unique().to_list())
        examples = ", ".join(dict.fromkeys(a.metric for a in aliases[:4]))
        raise not_the_source(path, name, f"metrics of the alias table such as {examples} (docs/ingest.md)", found)
    audit = [audit_rows(unknown, file=str(path), layer="-", reason="unmapped_record", column="metric not in the alias table", warning=True)]
    gauges = known.filter(pl.col("__kind") == "gauge")
    finite = pl.col(VALUE).is_finite()
    audit.append(audit_rows(gauges.filter(~finite), file=str(path), layer="-", reason="unparsed_field", column="value (NaN or Inf)", warning=True))
    gauges = gauges.filter(finite).with_columns((pl.col(VALUE) * pl.col("__scale") / pl.col("__divisor")).alias(VALUE))
    present = [aliases[i] for i in sorted(gauges[_ALIAS].unique().to_list())]
    frames: list[pl.DataFrame] = []
    origins: list[ColumnOrigin] = []
    for layer in ("queue", "gpu"):
        rows = gauges.filter(pl.col("__layer") == layer)
        if rows.is_empty() or (layer == "queue" and entities.queue is None):
            continue
        made, bad = _layer_rows(path, layer, rows, entities)
        frames.append(made)
        audit.append(bad)
        has_host = made["host"].null_count() < made.height
        origins += _origins(name, layer, [a for a in present if a.layer == layer], entities, samples.clock, has_host)
    if entities.device_attributes and any(o.layer == "gpu" for o in origins):
        info, info_origins = _device_info(path, gauges.filter(pl.col("__layer") == "gpu"), entities, name)
        frames.append(info)
        origins += info_origins
    rows_frame = pl.concat(frames, how="diagonal_relaxed") if frames else _empty_rows()
    rows_frame = rows_frame.drop([c for c in EXTRAS if c in rows_frame.columns and rows_frame[c].null_count() == rows_frame.height])
    kinds = {a.metric: a.kind for a in aliases if a.kind != "gauge"}
    units = {a.metric: a.unit for a in aliases if a.kind != "gauge"}
    aggregates = known.filter(pl.col("__kind") != "gauge").select(METRIC, TS, VALUE, *[c for c in known.columns if c.startswith("@")])
    summary = summaries(aggregates, kinds, units)
    notes = [f"times: {samples.clock}"]
    if not unknown.is_empty():
        names = sorted(unknown[METRIC].unique().to_list())
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        notes.append(f"{len(names)} metric{'s' if len(names) > 1 else ''} not in the alias table, not converted: {shown}")
    if any(s.kind == "histogram" for s in summary):
        notes.append(HISTOGRAM_NOTE)
    if any(s.kind == "counter" for s in summary):
        notes.append(COUNTER_NOTE)
    return Mapped(rows_frame, samples.records, pl.concat(audit), tuple(dict.fromkeys(origins)), tuple(notes), summary)


def _alias_of(frame: pl.DataFrame, aliases: Sequence[Alias]) -> pl.Expr:
    """The alias index of each sample (null: not in the table). Selectors first: a family split
    by a label has entries per label value."""
    hist_base = pl.col(METRIC).str.replace(r"(_bucket|_sum|_count)$", "")
    is_part = pl.col(METRIC).str.contains(r"(_bucket|_sum|_count)$")
    expr = pl.lit(None, pl.Int64)
    order = sorted(range(len(aliases)), key=lambda i: -len(aliases[i].select))
    for i in reversed(order):  # the first condition built last wins: selectors before plain names
        a = aliases[i]
        cond = (hist_base == a.metric) & is_part if a.kind == "histogram" else pl.col(METRIC) == a.metric
        for key, value in a.select:
            cond = cond & (pl.col(label(key)) == value) if label(key) in frame.columns else pl.lit(False)
        expr = pl.when(cond).then(pl.lit(i, pl.Int64)).otherwise(expr)
    return expr


def _layer_rows(path: Path, layer: str, rows: pl.DataFrame, entities: Entities) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per entity and time, a column per metric (the first sample if a series repeats);
    RECORD is the row's first sample."""
    columns = sorted(rows[_COLUMN].unique().to_list())
    keyed = rows.with_columns(
        (entities.queue if layer == "queue" and entities.queue is not None else entities.device).alias("__key"),
        entities.host.alias("host"),
        *[first_label(rows, names).alias(extra) for extra, names in EXTRAS.items()],
    )
    unplaced = keyed.filter(pl.col("__key").is_null())
    audit = audit_rows(unplaced, file=str(path), layer=layer, reason="unmapped_record", column="device labels (UUID/uuid, or Hostname and gpu)")
    index = [TS, "__key", "host", *EXTRAS]
    wide = (
        keyed.filter(pl.col("__key").is_not_null())
        .group_by(index)
        .agg(*[pl.col(VALUE).filter(pl.col(_COLUMN) == c).first().alias(c) for c in columns], pl.col(RECORD).min())
    )
    counts = [c for c in columns if c in schema.COUNT_COLUMNS or c == RUNNING]
    whole = [(c, pl.col(c).is_not_null() & ((pl.col(c) != pl.col(c).round(0)) | (pl.col(c) < 0))) for c in counts]
    for c, bad in whole:
        audit = pl.concat([audit, audit_rows(wide.filter(bad), file=str(path), layer=layer, reason="unparsed_field", column=c)])
    if whole:
        wide = wide.filter(~pl.any_horizontal([bad for _, bad in whole]))
    key = "queue" if layer == "queue" else "device"
    made = wide.select(
        pl.col(TS).alias("ts"),
        pl.lit(layer).alias("layer"),
        pl.lit("sample").alias("event"),
        pl.col("__key").alias(key),
        pl.col("host"),
        *[(pl.col(c).round(0).cast(pl.Int64) if c in counts else pl.col(c).cast(schema.dtype_of(c))).alias(c) for c in columns],
        *EXTRAS,
        pl.col(RECORD),
    ).sort(RECORD)
    return made, audit


def _device_info(path: Path, gpu: pl.DataFrame, entities: Entities, name: str) -> tuple[pl.DataFrame, list[ColumnOrigin]]:
    """One `device_info` row per device (ts = first seen) with what its labels say of it."""
    attrs = entities.device_attributes
    keyed = gpu.with_columns(
        entities.device.alias("device"), entities.host.alias("host"),
        *[expr.alias(col) for col, (expr, _) in attrs.items()],
        *[first_label(gpu, names).alias(extra) for extra, names in EXTRAS.items()],
    ).filter(pl.col("device").is_not_null())
    info = (
        keyed.sort(TS, RECORD)
        .group_by("device", maintain_order=True)
        .agg(pl.col(TS).first().alias("ts"), pl.col(RECORD).first(), *[pl.col(c).drop_nulls().first() for c in ("host", *attrs, *EXTRAS)])
        .with_columns(pl.lit("gpu").alias("layer"), pl.lit("device_info").alias("event"))
    )
    given = [c for c in attrs if info[c].null_count() < info.height]
    origins = [
        ColumnOrigin("gpu", "event", "derived", name, (), "`device_info`: one row per device, at its first sample"),
        *[ColumnOrigin("gpu", c, "observed", name, (f"label {attrs[c][1]}",)) for c in given],
    ]
    return info, origins


def _origins(name: str, layer: str, present: list[Alias], entities: Entities, clock: str, has_host: bool) -> list[ColumnOrigin]:
    key = "queue" if layer == "queue" else "device"
    formula = entities.queue_formula if layer == "queue" else entities.device_formula
    out = [
        ColumnOrigin(layer, "ts", "observed", name, ("sample time",), note=clock),
        ColumnOrigin(layer, "event", "derived", name, (), "`sample`: the metrics of one entity at one time"),
        ColumnOrigin(layer, key, "derived", name, ("labels",), formula),
    ]
    if has_host:
        out.append(ColumnOrigin(layer, "host", "observed", name, ("label Hostname/hostname",)))
    by_column: dict[str, list[Alias]] = {}
    for a in present:
        if a.column is not None and a.column in schema.COLUMNS:
            by_column.setdefault(a.column, []).append(a)
    for column, group in by_column.items():
        notes = "; ".join(f"{a.key}: {a.note}" for a in group if a.note)
        out.append(ColumnOrigin(layer, column, "observed", name, tuple(a.key for a in group), note=notes or None))
    return out


def _empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema={"ts": pl.Int64, "layer": pl.String, "event": pl.String, RECORD: pl.UInt32})
