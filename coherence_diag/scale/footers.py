"""What the Parquet footers of a trace say, without reading a row: per row group, its rows, the
range of `ts` and `layer` (from the column statistics) and the uncompressed bytes of each column.

The layout check (layout.py) and the work-unit planner (plan.py) are pure functions of these
facts; this module is the only one here that opens files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from coherence_diag.errors import TraceError
from coherence_diag.ingest import FileSource

_NS_PER_UNIT = {"nanoseconds": 1, "microseconds": 1_000, "milliseconds": 1_000_000}


@dataclass(frozen=True)
class RowGroup:
    """One row group (or, for a CSV file, the whole file as one unskippable group)."""

    rows: int
    ts_min_ns: int | None = None  # None: no usable statistics (absent, or `ts` stored as text)
    ts_max_ns: int | None = None
    layer_min: str | None = None  # None: no usable statistics; per-layer files give their layer
    layer_max: str | None = None
    bytes_by_column: dict[str, int] = field(default_factory=dict)  # uncompressed, as in the footer
    # Every `ts` of the group is null (its statistics count nulls and have no range): its rows
    # belong to no time slice (units.py reads them apart), so it needs no range to be planned.
    ts_nulls_only: bool = False

    @property
    def has_ts_stats(self) -> bool:
        return self.ts_min_ns is not None and self.ts_max_ns is not None

    @property
    def has_layer_stats(self) -> bool:
        return self.layer_min is not None and self.layer_max is not None

    def holds_layer(self, layer: str) -> bool:
        """Whether the statistics allow rows of `layer` here (True when they cannot tell)."""
        if not self.has_layer_stats:
            return True
        assert self.layer_min is not None and self.layer_max is not None
        return self.layer_min <= layer <= self.layer_max


@dataclass(frozen=True)
class FileFooter:
    path: str
    fmt: str  # "parquet" | "csv"
    row_groups: tuple[RowGroup, ...]

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.row_groups)


def read_footers(source: FileSource) -> list[FileFooter]:
    """The footer facts of every file of an opened trace (CSV files: one group, no statistics,
    rows unknown (0), since counting them means reading them)."""
    return [_footer(str(f.path), f.fmt, f.layer_hint) for f in source.files]


def _footer(path: str, fmt: str, layer_hint: str | None) -> FileFooter:
    if fmt != "parquet":
        return FileFooter(path, fmt, (RowGroup(rows=0, layer_min=layer_hint, layer_max=layer_hint),))
    try:
        meta = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise TraceError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    ts_scale = _ts_ns_per_unit(meta, names)
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        sizes = {names[i]: group.column(i).total_uncompressed_size for i in range(group.num_columns)}
        ts_min = ts_max = None
        nulls_only = False
        if ts_scale is not None:
            stats = group.column(names.index("ts")).statistics
            if stats is not None and stats.has_min_max and group.num_rows:
                ts_min, ts_max = int(stats.min_raw) * ts_scale, int(stats.max_raw) * ts_scale
            nulls_only = stats is not None and stats.has_null_count and stats.null_count == group.num_rows > 0
        layer_min, layer_max = layer_hint, layer_hint
        if "layer" in names:
            layer_min, layer_max = _layer_range(group.column(names.index("layer")).statistics, layer_hint)
        groups.append(RowGroup(group.num_rows, ts_min, ts_max, layer_min, layer_max, sizes, nulls_only))
    return FileFooter(path, fmt, tuple(groups))


def _layer_range(stats: Any, hint: str | None) -> tuple[str | None, str | None]:
    """The range of layer names a group's rows can have. A null `layer` takes the file name's
    layer (files.py), so with nulls the hint widens the range; without a hint they are set aside."""
    if stats is None or not getattr(stats, "has_null_count", False):
        return None, None
    lo = hi = None
    if stats.has_min_max:
        lo, hi = _text(stats.min), _text(stats.max)
        if lo is None or hi is None:
            return None, None
    if hint is not None and stats.null_count:
        lo, hi = min(lo or hint, hint), max(hi or hint, hint)
    return lo, hi


def _ts_ns_per_unit(meta: pq.FileMetaData, names: list[str]) -> int | None:
    """ns per stored unit of `ts` when its statistics are comparable times: a Parquet timestamp,
    or plain int64 (ns by the trace format); None for text and other types."""
    if "ts" not in names:
        return None
    column = meta.schema.column(names.index("ts"))
    if column.physical_type != "INT64":
        return None
    logical = json.loads(column.logical_type.to_json())
    if logical.get("Type") == "Timestamp":
        return _NS_PER_UNIT.get(logical.get("timeUnit", ""))
    return 1 if logical.get("Type") in (None, "None", "Int") else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def footers_of(path: str | Path) -> list[FileFooter]:
    """`read_footers` of the trace at `path` (any container the trace format accepts)."""
    from coherence_diag.ingest import open_trace

    return read_footers(open_trace(path))
