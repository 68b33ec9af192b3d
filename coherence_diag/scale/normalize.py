"""`coherence-diag normalize`: any trace in the trace format (a Parquet or CSV file, shards, a
per-layer directory) rewritten as one Parquet file sorted by (layer, ts), in row groups of
ROW_GROUP_ROWS rows with statistics, so that later runs skip the row groups a time or layer
predicate excludes (layout.py says when a trace's layout prevents it).

The rows are the input's, unchanged and none dropped (validation is the analysis's job): known
columns cast to their declared types, schema columns first, `ts` a UTC timestamp. Ties in
(layer, ts) keep the input's order (file, then record), so the output depends only on the input.

Memory: Polars' streaming sort holds the whole table (5.6 GiB to sort the 10M-row bench trace),
so the sort is external. One streaming pass counts rows per (layer, second); consecutive
seconds of a layer are grouped into chunks of `budget / (SORT_FACTOR x bytes per row)` rows
(a chunk may pass that by the rows of its last second); a second streaming pass spills every row into its chunk's temporary file (next to the
output); then each chunk is read, sorted and appended to the output. Peak memory is about the
budget (one chunk, plus at most one second of one layer), and the
temporary files take about the size of the output on disk. A trace that fits the budget is
sorted in memory in one go. Either way the output is written under a temporary name and moved
into place: a failed run leaves nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from coherence_diag import schema
from coherence_diag.errors import InputError, TraceError
from coherence_diag.ingest import ORIGIN, RECORD, FileSource, open_trace, provenance_path
from coherence_diag.outputs import replacing, write_atomic

ROW_GROUP_ROWS = 131_072  # 128 Ki rows: fine-grained skipping, still good compression
DEFAULT_BUDGET_BYTES = 2 << 30
# A chunk is held decoded, sorted (a second copy) and converted to Arrow for writing (a third).
SORT_FACTOR = 3
_GRAIN_NS = 1_000_000_000  # chunks are whole seconds of one layer
_SAMPLE_ROWS = 10_000  # rows decoded to estimate the bytes a row takes in memory
_BUCKET, _CHUNK = "_bucket", "_chunk"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Normalized:
    output: Path
    rows: int
    row_groups: int
    chunks: int  # 1: sorted in memory; more: the external sort's chunks
    provenance_file: Path | None


def normalize(
    trace: str | Path,
    output: Path,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    row_group_rows: int = ROW_GROUP_ROWS,
    progress: Progress | None = None,
) -> Normalized:
    """Write the trace at `trace` to `output` (Parquet) sorted by (layer, ts); see the module doc."""
    step = progress or (lambda _msg: None)
    if budget_bytes <= 0 or row_group_rows <= 0:
        raise InputError(f"the memory budget and the row-group size must be positive, got {budget_bytes} and {row_group_rows}")
    source = open_trace(trace)
    _refuse_input_as_output(source, output)
    frame = source.scan()
    sample = frame.head(_SAMPLE_ROWS).collect()
    if sample.is_empty():
        raise TraceError(f"{trace}: the trace has no rows; nothing to normalize", path=str(trace))
    row_bytes = max(1.0, sample.estimated_size() / sample.height)
    chunk_rows = max(row_group_rows, int(budget_bytes / (SORT_FACTOR * row_bytes)))

    step("counting rows per layer and second")
    bucketed = frame.with_columns((pl.col("ts") // _GRAIN_NS).alias(_BUCKET))
    chunks = chunk_table(bucketed.group_by("layer", _BUCKET).agg(pl.len()).collect(engine="streaming"), chunk_rows)
    rows = int(chunks["len"].sum())
    with replacing(output) as tmp, _Appender(tmp, row_group_rows) as appender:
        n_chunks = 1 if rows <= chunk_rows else int(chunks.select(pl.col(_CHUNK).max()).item()) + 1
        if n_chunks == 1:
            step(f"sorting {rows:,} rows in memory")
            appender.add(_sorted(frame.collect()))
        else:
            _external_sort(bucketed, chunks, n_chunks, output, appender, step)
    sidecar = None
    given = provenance_path(str(trace).rstrip("/"))
    if given.is_file():  # a converted trace keeps its provenance: the rows are the same
        sidecar = provenance_path(output)
        write_atomic(sidecar, given.read_bytes())
    return Normalized(output, rows, appender.row_groups, n_chunks, sidecar)


def chunk_table(counts: pl.DataFrame, chunk_rows: int) -> pl.DataFrame:
    """(layer, bucket, len) counts -> the same with `_chunk`: consecutive buckets of a layer
    grouped into chunks, a new one when the next bucket would start past `chunk_rows` rows,
    numbered 0.. in (layer, bucket) order. Null layers and times sort last, as in the output."""
    ordered = counts.sort("layer", _BUCKET, nulls_last=True)
    before = pl.col("len").cum_sum() - pl.col("len")
    return ordered.with_columns((before // chunk_rows).over("layer").alias("_local")).with_columns(
        pl.struct("layer", "_local").rle_id().alias(_CHUNK)
    ).drop("_local")


def _external_sort(bucketed: pl.LazyFrame, chunks: pl.DataFrame, n: int, output: Path, appender: _Appender, step: Progress) -> None:
    spill = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".spill", dir=output.parent if str(output.parent) else "."))
    try:
        step(f"spilling {int(chunks['len'].sum()):,} rows into {n} chunks")
        mapping = chunks.select("layer", _BUCKET, _CHUNK).lazy()
        tagged = bucketed.join(mapping, on=["layer", _BUCKET], how="left", nulls_equal=True).drop(_BUCKET)
        writers: dict[int, pq.ParquetWriter] = {}
        try:
            for batch in tagged.collect_batches():
                for (chunk,), part in batch.partition_by(_CHUNK, as_dict=True, include_key=False).items():
                    table = part.to_arrow(compat_level=pl.CompatLevel.oldest())
                    if chunk not in writers:
                        writers[chunk] = pq.ParquetWriter(spill / f"{chunk:06d}.parquet", table.schema, compression="lz4")
                    writers[chunk].write_table(table)
        finally:
            for writer in writers.values():
                writer.close()
        for chunk in range(n):
            step(f"sorting chunk {chunk + 1} of {n}")
            path = spill / f"{chunk:06d}.parquet"
            if path.exists():
                appender.add(_sorted(pl.read_parquet(path)))
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in output order and output columns: schema columns first, then the input's others."""
    known = [c for c in schema.COLUMNS if c in frame.columns]
    extra = [c for c in frame.columns if c not in schema.COLUMNS and c not in (ORIGIN, RECORD, _BUCKET, _CHUNK)]
    return (
        frame.sort("layer", "ts", ORIGIN, RECORD, nulls_last=True)
        .select(*known, *extra)
        .with_columns(pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC"))
    )


class _Appender:
    """Appends sorted frames to one Parquet file in row groups of `rows` rows that never mix
    layers: a row group's `layer` statistics then name one layer (its last group may be short)."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows
        self.writer: pq.ParquetWriter | None = None
        self.carry: pa.Table | None = None
        self.layer: object = None
        self.row_groups = 0

    def __enter__(self) -> _Appender:
        return self

    def add(self, frame: pl.DataFrame) -> None:
        for (layer,), part in frame.partition_by("layer", as_dict=True, maintain_order=True).items():
            table = part.to_arrow(compat_level=pl.CompatLevel.oldest())
            if self.carry is not None and layer != self.layer:
                self._write(self.carry)
                self.carry = None
            self.layer = layer
            if self.carry is not None:
                table = pa.concat_tables([self.carry, table])
            whole = len(table) // self.rows * self.rows
            if whole:
                self._write(table.slice(0, whole))
            self.carry = table.slice(whole) if whole < len(table) else None

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd", write_statistics=True)
        self.writer.write_table(table, row_group_size=self.rows)
        self.row_groups += -(-len(table) // self.rows)

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None and self.carry is not None:
                self._write(self.carry)
        finally:
            if self.writer is not None:
                self.writer.close()


def _refuse_input_as_output(source: FileSource, output: Path) -> None:
    target = Path(output).resolve()
    for origin in source.origins:
        if Path(origin).resolve() == target:
            raise InputError(f"{output}: refusing to write the normalized trace over its input {origin}")
