"""Large traces in bounded memory by tiling: K copies of one simulated slice, laid end to end.

    tile_trace(Path("slice.parquet"), Path("big/"), copies=10)   # 10 shards, part-00000.parquet ...

Simulating 100M rows at once would hold them all in memory; instead one slice is simulated (and
cached), then copy k is the slice with every `ts` shifted by k x `shift_ns` and every request id
prefixed `t{k:04d}-` (ids are the only per-request keys of the format: join keys derive from them),
streamed from the slice file to its own shard (`scan_parquet` -> `with_columns` -> `sink_parquet`):
memory stays at what the streaming engine buffers, whatever K.

The shift is the slice's span (first `ts` to the last span's end) plus `gap_s`, rounded up to a
multiple of `align_s`: windows that divide `align_s` then fall on the same grid in every copy, so
each copy's window aggregates equal the slice's. The default gap is 60 s, the look-back of the
steal as-of join (paths.ASOF_TOLERANCE_NS), so that no copy's dispatches see the previous copy's
samples. Devices, hosts, pools, links and envs are the same in every copy: one fleet, observed for
K times as long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.simulate.writer import atomic_dir

ROW_GROUP_ROWS = 131_072  # as `normalize` writes: row groups a time predicate can skip
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Tiled:
    directory: Path
    copies: int
    rows: int  # copies x slice rows
    shift_ns: int  # copy k starts k x shift_ns after the slice
    shards: tuple[Path, ...]


def tile_trace(slice_path: Path, output: Path, copies: int, *, gap_s: float = 60.0, align_s: float = 60.0) -> Tiled:
    """Write `copies` shifted copies of the trace file `slice_path` as shards into the directory
    `output` (atomically: a failed run leaves no partial directory)."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise InputError(f"invalid number of copies {copies!r}; expected a positive integer")
    if not (math.isfinite(gap_s) and gap_s >= 0 and math.isfinite(align_s) and align_s > 0):
        raise InputError(f"invalid gap_s {gap_s!r} or align_s {align_s!r}; expected gap_s >= 0 and align_s > 0 seconds")
    scan = pl.scan_parquet(slice_path, glob=False)
    names = scan.collect_schema()
    if "ts" not in names:
        raise InputError(f"{slice_path}: no `ts` column; expected a trace file")
    shifting_datetime = isinstance(names["ts"], pl.Datetime)
    ts_ns = pl.col("ts").dt.epoch("ns") if shifting_datetime else pl.col("ts").cast(pl.Int64)
    end_ns = ts_ns + (pl.col("dur_ms").fill_null(0.0) * 1e6).cast(pl.Int64) if "dur_ms" in names else ts_ns
    first, last, rows = scan.select(ts_ns.min().alias("first"), end_ns.max().alias("last"), pl.len()).collect().row(0)
    if not rows or first is None:
        raise InputError(f"{slice_path}: the slice has no timed rows to tile")
    align_ns = int(round(align_s * _NS_PER_S))
    shift_ns = -(-(last - first + int(round(gap_s * _NS_PER_S))) // align_ns) * align_ns

    def copy(k: int) -> pl.LazyFrame:
        shifted = pl.col("ts") + (pl.duration(nanoseconds=k * shift_ns) if shifting_datetime else pl.lit(k * shift_ns))
        columns = [shifted.alias("ts")]
        if "request_id" in names:
            columns.append((pl.lit(f"t{k:04d}-") + pl.col("request_id").cast(pl.String)).alias("request_id"))
        return scan.with_columns(columns)

    shards = tuple(Path(f"part-{k:05d}.parquet") for k in range(copies))

    def write(directory: Path) -> None:
        for k, shard in enumerate(shards):
            copy(k).sink_parquet(directory / shard, compression="zstd", statistics=True, row_group_size=ROW_GROUP_ROWS)

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_dir(output, write)
    except OSError as exc:
        raise InputError(f"cannot write tiled trace to {output}: {exc.strerror or exc}; expected a writable location") from exc
    return Tiled(output, copies, copies * rows, shift_ns, tuple(output / s for s in shards))
