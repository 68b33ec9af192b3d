"""Slices of a trace: the rows one work unit reads, as a `TraceSource` that `validate` reads
unchanged (docs/scale.md).

A `SliceSource` is a `FileSource` restricted by a `RowFilter`: time spans [start, end) and layers,
applied twice. In each file's Parquet scan, on the columns as stored (`ts` as its own timestamp
or integer type, bounds rounded to its unit), so that row-group statistics skip what the slice
does not need; and on the canonical columns after the casts, which decides (the scan predicate
only ever lets more rows through). A slice may also leave out the rows of given requests
(`without_keys`): those a work unit leaves to the stitch.

A `RowsSource` is rows already read (a stitch's gathered rows), in canonical types with ORIGIN
and RECORD, standing in for the trace they came from (its columns, names and origins), so that
validation sees them exactly as it would in the whole trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from coherence_diag import request_keys
from coherence_diag.errors import TraceError
from coherence_diag.ingest import FileSource
from coherence_diag.ingest.files import SourceFile
from coherence_diag.ingest.source import empty_audit
from coherence_diag.model import Provenance

# Layers whose rows belong to their request (the request paths read them by key): a request that
# crosses a unit edge takes its rows of these layers to the stitch. Other layers stay in their unit.
ROUTED_LAYERS = ("scheduler", "gpu", "network")

_NS_PER = {"ns": 1, "us": 1_000, "ms": 1_000_000}


@dataclass(frozen=True)
class RowFilter:
    """Which rows a slice reads: `ts` in one of `spans` ([start_ns, end_ns) each), or with
    `null_ts` the rows whose `ts` is null instead; `layers` (None: every layer, unknown ones too)."""

    spans: tuple[tuple[int, int], ...] = ()
    layers: tuple[str, ...] | None = None
    null_ts: bool = False

    def canonical(self) -> pl.Expr:
        ts = pl.col("ts")
        if self.null_ts:
            when = ts.is_null()
        elif self.spans:
            when = pl.any_horizontal([(ts >= lo) & (ts < hi) for lo, hi in self.spans])
        else:
            when = pl.lit(False)
        if self.layers is not None:
            when = when & pl.col("layer").is_in(list(self.layers))
        return when

    def stored(self, f: SourceFile) -> pl.Expr | None:
        """The same filter on `f`'s columns as stored, where its statistics can serve (Parquet
        timestamp or integer `ts`, text `layer`); None where they cannot (the canonical filter
        alone then decides)."""
        if f.fmt != "parquet":
            return None
        parts: list[pl.Expr] = []
        stored_ts = f.columns.get("ts")
        if isinstance(stored_ts, pl.Datetime) or (stored_ts is not None and stored_ts.is_integer()):
            ts = pl.col("ts")
            if self.null_ts:
                parts.append(ts.is_null())
            else:
                parts.append(pl.any_horizontal([(ts >= _stored(lo, stored_ts)) & (ts < _stored(hi, stored_ts)) for lo, hi in self.spans]))
        if self.layers is not None:
            if "layer" not in f.columns:
                parts.append(pl.lit(f.layer_hint in self.layers))
            elif f.columns["layer"] == pl.String and f.layer_hint is None:
                parts.append(pl.col("layer").is_in(list(self.layers)))
        return pl.all_horizontal(parts) if parts else None


def _stored(bound_ns: int, dtype: pl.DataType) -> pl.Expr:
    """`bound_ns` in the stored type of `ts`: t_ns >= b <=> t >= ceil(b / unit), and likewise for <."""
    if isinstance(dtype, pl.Datetime):
        per = _NS_PER[dtype.time_unit or "us"]
        return pl.lit(-(-bound_ns // per), pl.Int64).cast(pl.Datetime(dtype.time_unit or "us", dtype.time_zone))
    return pl.lit(bound_ns, pl.Int64)


def routed_to(keys: pl.Series) -> pl.Expr:
    """Rows of ROUTED_LAYERS whose request key is in `keys` (never null)."""
    key = request_keys.hashed_key(pl.col("request_id"))
    return (pl.col("layer").is_in(list(ROUTED_LAYERS)) & key.is_in(keys.implode())).fill_null(False)


@dataclass
class _PartOf:
    """A source standing in for part of `parent`: its columns, names and origins."""

    parent: FileSource

    @property
    def display_path(self) -> str:
        return self.parent.display_path

    @property
    def columns(self) -> set[str]:
        return self.parent.columns

    @property
    def single_text(self) -> dict[str, str]:
        return self.parent.single_text

    @property
    def origins(self) -> Sequence[str]:
        return self.parent.origins

    @property
    def provenance(self) -> Provenance | None:
        return self.parent.provenance

    def unmapped(self) -> pl.DataFrame:
        return empty_audit()  # the parent's, if any, are counted once, in the reduce

    def read_error(self, exc: BaseException) -> TraceError:
        return self.parent.read_error(exc)


@dataclass
class SliceSource(_PartOf):
    """The rows of `parent` that `rows` selects, less the rows routed to `without_keys`."""

    rows: RowFilter
    without_keys: pl.Series | None = None

    def scan(self) -> pl.LazyFrame:
        keep = self.rows.canonical()
        if self.without_keys is not None and not self.without_keys.is_empty() and "request_id" in self.parent.columns:
            keep = keep & ~routed_to(self.without_keys)
        return self.parent.scan(where=self.rows.stored).filter(keep)


@dataclass
class RowsSource(_PartOf):
    """Rows already read from `parent` (canonical types, ORIGIN and RECORD), as a source."""

    frame: pl.DataFrame

    def scan(self) -> pl.LazyFrame:
        return self.frame.lazy()
