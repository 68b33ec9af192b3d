"""Write a simulated trace in any trace-format v1 container, atomically.

Every file is written under a temporary name in its final directory and moved into place
with os.replace; directories (per-layer files, shards) are built as a temporary sibling
directory and swapped in whole. An interrupted write never leaves a partial trace behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.simulate.schema import COLUMNS, LAYER_COLUMNS, LAYERS

FORMATS = ("parquet", "csv", "layers", "shards")
CSV_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.9fZ"  # ts is UTC, so "Z" is exact
MIN_SHARDS = 4
ROWS_PER_SHARD = 1_000_000  # bounds the memory of cutting one shard


def write_trace(df: pl.DataFrame, path: Path | str, *, fmt: str | None = None, shards: int | None = None) -> None:
    """Write `df` to `path`.

    fmt: "parquet" / "csv" (one file), "layers" (a directory with one Parquet file per layer,
    each holding that layer's columns and no `layer` column) or "shards" (a directory of
    `shards` Parquet files split by time; default max(4, one per million rows)). Without
    fmt: a path ending in "/" or naming an existing directory means "layers", otherwise the
    suffix (.parquet or .csv) decides.
    """
    kind = _resolve_format(path, fmt)
    missing = [c for c in ("ts", "layer", "event") if c not in df.columns]
    if missing:
        raise InputError(f"cannot write trace to {path}: the table lacks required column(s) {', '.join(missing)}")
    if shards is None:
        shards = max(MIN_SHARDS, -(-df.height // ROWS_PER_SHARD))
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InputError(f"invalid shard count {shards!r} for {path}; expected a positive integer")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "parquet":
            _atomic_file(target, lambda tmp: _write_parquet(df, tmp))
        elif kind == "csv":
            _atomic_file(target, lambda tmp: df.write_csv(tmp, datetime_format=CSV_DATETIME_FORMAT))
        elif kind == "layers":
            atomic_dir(target, lambda d: _write_layers(df, d))
        else:
            atomic_dir(target, lambda d: _write_shards(df, d, shards))
    except OSError as exc:
        raise InputError(f"cannot write trace to {path}: {exc.strerror or exc}; expected a writable location") from exc


def _resolve_format(path: Path | str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"unknown trace format {fmt!r} for {path}; expected one of: {', '.join(FORMATS)}")
        return fmt
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "layers"
    suffix = Path(text).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise InputError(
        f"cannot tell the trace format of {path}: expected a .parquet or .csv suffix, a path ending in '/', "
        f"or fmt= one of {', '.join(FORMATS)}"
    )


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(path, compression="zstd", compression_level=9, statistics=True)


def _write_layers(df: pl.DataFrame, directory: Path) -> None:
    extras = [c for c in df.columns if c not in COLUMNS]
    for layer in LAYERS:
        cols = [c for c in LAYER_COLUMNS[layer] if c in df.columns] + extras
        # select before materializing: the other layers' columns are never copied
        part = df.lazy().filter(pl.col("layer") == layer).select(cols).collect()
        if part.height:
            _write_parquet(part, directory / f"{layer}.parquet")


def _write_shards(df: pl.DataFrame, directory: Path, n: int) -> None:
    """n time ranges with about equal row counts; each shard is written sorted by ts.

    Shards are cut one at a time rather than by sorting the whole table, which would
    materialize every column of every row at once."""
    ts = df.get_column("ts").to_physical().to_numpy()
    n = max(1, min(n, df.height))
    order = np.sort(ts)
    cuts = [order[len(order) * i // n] for i in range(1, n)] if len(order) else []
    edges = [None, *cuts, None]
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        cond = pl.lit(True)
        if lo is not None:
            cond = cond & (pl.col("ts").to_physical() >= int(lo))
        if hi is not None:
            cond = cond & (pl.col("ts").to_physical() < int(hi))
        shard = df.filter(cond).sort("ts", maintain_order=True)
        _write_parquet(shard, directory / f"part-{i:05d}.parquet")


def _atomic_file(target: Path, write: Callable[[Path], None]) -> None:
    if target.is_dir():
        raise InputError(f"cannot write trace file {target}: a directory of that name exists; expected a file path")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a trace is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temporary directory next to `target`, which then replaces `target` in
    one rename: readers see the old tree or the new one, never a partial one."""
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot write trace directory {target}: a file of that name exists; expected a directory path")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():  # swap: old tree aside, new tree in, old tree removed
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / "trace")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
