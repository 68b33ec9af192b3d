"""Work units' tables on disk (docs/scale.md, "Layers on disk"): each unit's request table and
projected layer parts are written to Parquet as the unit's result arrives (`Spill.take`, the
executors' `keep` hook), so results do not pile up in memory; once every unit has run, the parts
are gathered back a column at a time: the request table in memory (`gather_requests`), each
layer on disk again, in the trace's row order, one file per column (`spill_layers`), which the
readers after the request paths read a few columns at a time (layer_store.Layers.read).

The peak of the gather is the finished request table plus one layer's row order and one column,
not every unit's tables at once. The values, rows and orders are exactly those of the in-memory
merge, so reports stay byte-identical.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import polars as pl

from coherence_diag import paths, schema
from coherence_diag.ingest.source import ORIGIN, RECORD
from coherence_diag.layer_store import Layers, SpillDirectory, SpilledLayer, spill_errors
from coherence_diag.projection import kept_rows
from coherence_diag.request_keys import KEY

_T = TypeVar("_T")


@dataclass(frozen=True)
class SpilledFrame:
    """A frame in one Parquet file, read back a column at a time."""

    path: Path
    height: int
    schema: dict[str, pl.DataType]

    def column(self, name: str) -> pl.Series:
        if name not in self.schema:
            raise KeyError(name)
        return pl.read_parquet(self.path, columns=[name]).to_series()

    def read(self, columns: Sequence[str]) -> pl.DataFrame:
        return pl.read_parquet(self.path, columns=list(columns))


@dataclass(frozen=True)
class SpilledLayerPart:
    """A unit's projected rows of one layer on disk (units.LayerPart): the columns with a value
    on some row, ORIGIN and RECORD; `schema` is every column of the layer, in order."""

    frame: SpilledFrame
    schema: dict[str, pl.DataType]

    @property
    def height(self) -> int:
        return self.frame.height


@dataclass
class SpilledParts:
    """What `Spill.take` wrote of one unit's result."""

    requests: SpilledFrame
    layers: dict[str, SpilledLayerPart] = field(default_factory=dict)


class Spill:
    """Writes the tables of unit results into `directory` as they arrive."""

    def __init__(self, directory: SpillDirectory) -> None:
        self.directory = directory
        self._parts = 0

    def take(self, result: _T) -> _T:
        """The executors' `keep` hook: a units.UnitResult with its request table and layer parts
        written to disk (`UnitResult.spilled`) and dropped from memory; anything else as is."""
        from coherence_diag.scale.units import UnitResult  # units imports this module's types

        if not isinstance(result, UnitResult) or result.spilled is not None:
            return result
        n = self._parts
        self._parts += 1
        requests = self._write(result.requests, f"requests-{n:05d}")
        layers = {name: SpilledLayerPart(self._write(part.frame, f"{name}-{n:05d}"), part.schema) for name, part in result.layers.items()}
        result.spilled = SpilledParts(requests, layers)
        result.requests = result.requests.clear()
        result.layers = {}
        if result.summary is not None and isinstance(result.summary.request_ids, pl.DataFrame):
            # The id rows are read only if the caller asks for the request table with its ids
            # (Analysis.requests): on disk until then (about 0.4 GB at 100M trace rows). Kept
            # apart from the parts, which go once gathered.
            ids = self._write(result.summary.request_ids, f"ids-{n:05d}", folder="ids")
            result.summary = dataclasses.replace(result.summary, request_ids=pl.scan_parquet(ids.path))
        return result

    def drop_parts(self) -> None:
        """Remove the units' part files, once gathered (the gathered layers stay)."""
        shutil.rmtree(self.directory.path / "parts", ignore_errors=True)

    def _write(self, frame: pl.DataFrame, stem: str, folder: str = "parts") -> SpilledFrame:
        path = self.directory.path / folder / f"{stem}.parquet"
        with spill_errors(path.parent):
            path.parent.mkdir(exist_ok=True)
            # lz4: fast both ways; no statistics: the files are read whole, a column at a time.
            frame.write_parquet(path, compression="lz4", statistics=False)
        return SpilledFrame(path, frame.height, dict(frame.schema))


def gather_requests(parts: Sequence[SpilledFrame]) -> pl.DataFrame:
    """The request tables of all parts as one, in the single pass's order: inference requests
    first, completed ones first among them (paths.LEADING_ORDER), then by `request_key` (unique:
    the order is total). Built a column at a time."""
    found = [p for p in parts if p.height]
    if not found:
        return pl.DataFrame(schema=paths.PATH_SCHEMA)
    order_columns = ("workload_class", "outcome", KEY)
    keys = pl.concat([p.read(order_columns) for p in found], how="vertical")
    perm = keys.select(pl.arg_sort_by(paths.LEADING_ORDER, pl.col(KEY))).to_series()
    del keys
    return pl.DataFrame([pl.concat([p.column(name) for p in found], rechunk=False).gather(perm) for name in paths.PATH_SCHEMA])


def spill_layers(parts: Sequence[dict[str, SpilledLayerPart]], directory: SpillDirectory) -> Layers:
    """Each layer's rows from every part, in the trace's order (the single pass reads the files
    in order and each file's rows in order: ORIGIN, RECORD) and projected again (a part without a
    read event of a layer kept its first row: projection.project_layers), on disk, one file per
    column (layer_store.SpilledLayer)."""
    layers: dict[str, pl.DataFrame | SpilledLayer] = {}
    for layer in schema.LAYERS:
        found = [p[layer] for p in parts if layer in p]
        if found:
            layers[layer] = _spill_layer(layer, found, directory.path / layer)
    return Layers(layers, spill_dir=directory)


class _Gather:
    """One layer's columns gathered from its parts into the trace's order, one at a time."""

    def __init__(self, found: Sequence[SpilledLayerPart]) -> None:
        self.found = found
        self.schema = {name: dtype for name, dtype in found[0].schema.items() if name not in (ORIGIN, RECORD)}
        place = pl.col(ORIGIN).cast(pl.UInt64) * 2**32 + pl.col(RECORD).cast(pl.UInt64)
        self.perm = pl.concat([f.frame.read((ORIGIN, RECORD)).select(place) for f in found]).to_series().arg_sort()
        self.in_order = bool((self.perm.diff().drop_nulls() == 1).all())

    def column(self, name: str) -> pl.Series:
        dtype = self.schema[name]
        pieces = [
            f.frame.column(name) if name in f.frame.schema else pl.repeat(None, f.height, dtype=dtype, eager=True).alias(name)
            for f in self.found
        ]
        column = pl.concat(pieces, rechunk=self.in_order)
        return column if self.in_order else column.gather(self.perm)


def _spill_layer(layer: str, found: Sequence[SpilledLayerPart], directory: Path) -> SpilledLayer:
    gather = _Gather(found)
    # The projection's row filter reads `event`, and for the scheduler the retried requests.
    filter_columns = [c for c in ("event", KEY, "attempt") if c in gather.schema and (c == "event" or layer == "scheduler")]
    keep = kept_rows(layer, pl.DataFrame([gather.column(c) for c in filter_columns]))
    height = len(gather.perm) if keep is None else int(keep.sum())

    def columns() -> Iterator[pl.Series]:
        for name in gather.schema:
            column = gather.column(name)
            yield column if keep is None else column.filter(keep)

    return SpilledLayer.write(directory, columns(), height, gather.schema)
