"""`coherence-diag normalize`: any trace in the trace format (a Parquet or CSV file, shards, a
per-layer directory) rewritten as one Parquet file sorted by (layer, ts), in row groups of
ROW_GROUP_ROWS rows with statistics, so that later runs skip the row groups a time or layer
predicate excludes (layout.py says when a trace's layout prevents it).

The rows are the input's, unchanged and none dropped (validation is the analysis's job): known
columns cast to their declared types, schema columns first, `ts` a UTC timestamp. Ties in
(layer, ts) keep the input's order (file, then record), so the output depends only on the input.

Memory: Polars' streaming sort holds the whole table (5.6 GiB to sort the 10M-row bench trace),
so the sort is external, in three passes:

1. count: one streaming query counts rows per (layer, second) (two columns);
   consecutive seconds of a layer form chunks of about (budget - RESERVE_BYTES) / SORT_FACTOR
   bytes in memory (a chunk may pass that by the rows of its last second);
2. spill: the trace is read in pieces of about budget / PIECE_FACTOR bytes, each its own query
   (`_pieces`); each piece's rows of each chunk go to a temporary file of their own next to the
   output;
3. sort: each chunk's files are read, sorted a column at a time and appended to the output a
   row group at a time.

The bound is the budget plus ~250 MiB (Python, Polars, pages the allocator keeps); measured on
the 10M-row bench trace (docs/scale.md), the peak RSS was 447, 948 and 1,905-2,063 MiB for
budgets of 512 MiB, 1 GiB and 2 GiB. The temporary files take about the output's size on disk. A trace that fits in one chunk is sorted
in memory in one go. Both paths write the same file, byte for byte, whatever the budget (every
row group reaches the writer as one contiguous Arrow chunk). Either way the output is written
under a temporary name and moved into place: a failed run leaves nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
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
# Chunks hold (budget - RESERVE_BYTES) / SORT_FACTOR bytes in memory (fitted: see `_plan_rows`).
SORT_FACTOR = 2.5
RESERVE_BYTES = 384 << 20
# The spill pass reads the trace in pieces of budget / (PIECE_FACTOR x bytes per row) rows.
PIECE_FACTOR = 8
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
    chunk_rows, piece_rows = _plan_rows(budget_bytes, _row_bytes(sample), row_group_rows)

    step("counting rows per layer and second")
    bucketed = frame.with_columns((pl.col("ts") // _GRAIN_NS).alias(_BUCKET))
    chunks = chunk_table(bucketed.group_by("layer", _BUCKET).agg(pl.len()).collect(engine="streaming"), chunk_rows)
    rows = int(chunks["len"].sum())
    pieces = _pieces(source, frame.collect_schema(), piece_rows)
    with replacing(output) as tmp, _Appender(tmp, row_group_rows) as appender:
        n_chunks = 1 if rows <= chunk_rows else int(chunks.select(pl.col(_CHUNK).max()).item()) + 1
        if n_chunks == 1:
            step(f"sorting {rows:,} rows in memory")
            appender.add(_read_sorted(lambda: pl.concat(pieces, rechunk=False)))
        else:
            _external_sort(pieces, chunks, n_chunks, output, appender, step)
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


def _external_sort(pieces: Iterator[pl.DataFrame], chunks: pl.DataFrame, n: int, output: Path, appender: _Appender, step: Progress) -> None:
    spill = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".spill", dir=output.parent if str(output.parent) else "."))
    try:
        step(f"spilling {int(chunks['len'].sum()):,} rows into {n} chunks")
        mapping = chunks.select("layer", _BUCKET, _CHUNK)
        parts: dict[int, list[Path]] = {}
        for index, piece in enumerate(pieces):
            # Only the keys are joined (the piece's columns are not copied), and each chunk's rows
            # are filtered out of the piece: a piece meets few chunks (`partition_by` took 1.5x
            # the memory and 6x the time on the bench trace). Each part is a file of its own: an
            # open Parquet writer per chunk held ~5 MiB each (400 MiB for 81 chunks).
            keys = piece.select("layer", (pl.col("ts") // _GRAIN_NS).alias(_BUCKET))
            tag = keys.join(mapping, on=["layer", _BUCKET], how="left", nulls_equal=True, maintain_order="left")[_CHUNK]
            for chunk in tag.unique(maintain_order=True).to_list():
                path = spill / f"{chunk:06d}-{index:06d}.parquet"
                piece.filter(tag == chunk).write_parquet(path, compression="lz4", statistics=False)
                parts.setdefault(chunk, []).append(path)
            del piece, keys, tag  # before the next piece is read
        for chunk in range(n):
            step(f"sorting chunk {chunk + 1} of {n}")
            if chunk in parts:
                appender.add(_read_sorted(partial(pl.read_parquet, parts.pop(chunk))))
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _pieces(source: FileSource, columns: pl.Schema, rows: int) -> Iterator[pl.DataFrame]:
    """The trace's rows in frames of at most `rows` rows, file by file, each with the columns of
    the union `source.scan()` (a column a file lacks is null). Each piece is its own query: a
    Parquet file is read by row ranges (Polars reads only the row groups a range meets), a CSV
    file in batches of one streaming query (a row range of a CSV file is found by reading it
    from the start). One streaming query over a Parquet trace held 1.3-2.1 GiB whatever the
    batch size (its reader runs ahead of the consumer), and a row range of the union of several
    files is not pushed into them (1.6 s per range at 30M rows)."""
    for index, file in enumerate(source.files):
        frame = source.scan_file(index)
        if file.fmt == "parquet":
            total = int(frame.select(pl.len()).collect().item())
            batches: Iterable[pl.DataFrame] = (frame.slice(offset, rows).collect() for offset in range(0, total, rows))
        else:
            batches = frame.collect_batches(chunk_size=rows)
        for batch in batches:
            yield batch.select(pl.col(c).cast(t) if c in batch.columns else pl.lit(None, t).alias(c) for c, t in columns.items())


def _plan_rows(budget_bytes: int, row_bytes: float, row_group_rows: int) -> tuple[int, int]:
    """Rows per chunk (sorted in memory at once) and per piece (read at once by the spill pass).

    Measured on the 10M-row bench trace (docs/scale.md), the sort pass peaks at about 500 MiB
    (Python, Polars, what the spill pass leaves) plus up to ~2x a chunk's bytes in memory: the
    chunk, the column being gathered, a row group for the writer, and pages the allocator keeps
    from the chunk before, which vary from run to run (by ~150 MiB at 2 GiB). Chunks of
    (budget - RESERVE_BYTES) / SORT_FACTOR bytes kept the peak at about the budget from 512 MiB
    to 2 GiB (at most 2,063 MiB at 2 GiB), which leaves most of the documented 250 MiB above it
    to other traces; below ~530 MiB the chunks are one row group each (~450 MiB). The spill
    pass holds a piece, the part of it being filtered and Polars' read buffers: pieces of
    budget / PIECE_FACTOR bytes keep it well below the sort pass."""
    chunk_rows = max(row_group_rows, int((budget_bytes - RESERVE_BYTES) / (SORT_FACTOR * row_bytes)))
    piece_rows = min(chunk_rows, max(row_group_rows, int(budget_bytes / (PIECE_FACTOR * row_bytes))))
    return chunk_rows, piece_rows


def _read_sorted(read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """The frame `read()` returns, in output order and with the output columns: schema columns
    first, then the input's others. The rows are gathered a column at a time, each input column
    released once gathered, so the sort holds about one copy of the rows (`DataFrame.sort`
    gathers every column at once: two copies). `read` is called here so that nothing else holds
    the input."""
    frame = read()
    order = frame.select(pl.arg_sort_by("layer", "ts", ORIGIN, RECORD, nulls_last=True)).to_series()
    names = [c for c in schema.COLUMNS if c in frame.columns]
    names += [c for c in frame.columns if c not in schema.COLUMNS and c not in (ORIGIN, RECORD, _BUCKET, _CHUNK)]
    columns = [frame[c] for c in names]
    del frame
    for i in range(len(columns)):
        columns[i] = columns[i].gather(order)
    return pl.DataFrame(columns).with_columns(pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC"))


def _row_bytes(sample: pl.DataFrame) -> float:
    """Bytes a row of `sample` takes in memory. `estimated_size` counts a text column's characters
    but not its 16-byte views, which hold strings of up to 12 bytes: a row of the 10M-row bench
    trace takes ~480 bytes (RSS of a decoded chunk), not the 264 it says."""
    text = [c for c, t in sample.schema.items() if t == pl.String]
    if not text:
        return max(1.0, sample.estimated_size() / sample.height)
    length = pl.col(text).str.len_bytes()
    inline = sample.select(pl.sum_horizontal(length.filter(length <= 12).sum())).item()
    return max(1.0, (sample.estimated_size() - inline) / sample.height + 16 * len(text))


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
        """`frame` sorted by layer. Each layer's rows go to Arrow a row group at a time (a whole
        chunk converted at once would be one more copy of it): first what tops up the carry, then
        whole row groups. Each row group is handed to the writer as one contiguous chunk: chunk
        boundaries inside a row group can change its encoding (where a dictionary falls back to
        plain: seen on the bench trace's `request_id`), and the file would depend on the budget."""
        offset = 0
        for length in frame.select(pl.col("layer").rle().struct.field("len"))["len"].to_list():
            layer, end = frame["layer"][offset], offset + length
            if self.carry is not None and layer != self.layer:
                self._write(self.carry)
                self.carry = None
            self.layer = layer
            while offset < end:
                take = min(self.rows - (0 if self.carry is None else len(self.carry)), end - offset)
                table = frame.slice(offset, take).to_arrow(compat_level=pl.CompatLevel.oldest())
                offset += take
                if self.carry is not None:
                    table = pa.concat_tables([self.carry, table]).combine_chunks()
                if len(table) < self.rows:
                    self.carry = table
                else:
                    self.carry = None
                    self._write(table)

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
