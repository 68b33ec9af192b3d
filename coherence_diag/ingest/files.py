"""The trace format's own containers as a `TraceSource` (source.py): files in, one lazy table out.

A trace is one Parquet file, one CSV file, a directory or glob of shards, or a directory with
one file per layer (trace-format.md, "Containers"). Whatever the container, `open_trace` returns
a `FileSource` whose `scan()` is a single LazyFrame: the union of all files by column name,
with every known column cast to its declared type and `ts` as Int64 ns since the epoch (UTC).
A converted trace (`coherence-diag convert`) has its provenance next to it in
`TRACE.provenance.json` (provenance_path); the source reads it.

Nothing here reads row data except the UTF-8 check of CSV files; decoding happens when the
caller collects. Problems that can be seen from metadata alone (missing file, empty file, wrong
format, unreadable Parquet footer, a column of an impossible type) are collected over all files
and raised together as one TraceError.
"""

from __future__ import annotations

import codecs
import glob as globlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import pyarrow.parquet as pq

from coherence_diag import schema
from coherence_diag.errors import TraceError
from coherence_diag.ingest.source import EXAMPLES, ORIGIN, RECORD, empty_audit
from coherence_diag.model import Provenance
from coherence_diag.model.provenance import ProvenanceFormatError, from_dict

PROVENANCE_SUFFIX = ".provenance.json"

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
TRACE_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES
_GLOB_CHARS = set("*?[")

# ISO-8601 forms accepted in text timestamps; tried in order, the first that parses wins.
_TZ_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    fmt: str  # "parquet" | "csv"
    layer_hint: str | None  # layer named by the file name (per-layer directories)
    columns: dict[str, pl.DataType]  # as stored in the file
    # Text columns that hold one value on every row, by the file's Parquet statistics.
    single_text: dict[str, str] = field(default_factory=dict)


def provenance_path(trace: str | Path) -> Path:
    """Where the provenance of a converted trace is kept: `TRACE.provenance.json`."""
    return Path(f"{trace}{PROVENANCE_SUFFIX}")


@dataclass
class FileSource:
    """The files of one trace, checked at the metadata level and ready to scan."""

    display_path: str
    files: list[SourceFile]
    extra_columns: dict[str, pl.DataType] = field(default_factory=dict)
    provenance: Provenance | None = None

    @property
    def origins(self) -> Sequence[str]:
        return [str(f.path) for f in self.files]

    def unmapped(self) -> pl.DataFrame:
        """Files in the trace format map every row (problems are validation's to find)."""
        return empty_audit()

    @property
    def single_text(self) -> dict[str, str]:
        """Known text columns with the same single value on every row of every file (only
        Parquet statistics can tell; a CSV file makes this empty)."""
        first, *rest = [f.single_text for f in self.files]
        return {c: v for c, v in first.items() if all(other.get(c) == v for other in rest)}

    @property
    def columns(self) -> set[str]:
        """Known columns present in at least one file (plus `layer` when file names give it)."""
        present = {c for f in self.files for c in f.columns if c in schema.COLUMNS}
        if any(f.layer_hint for f in self.files):
            present.add("layer")
        return present

    def scan(self, where: Callable[[SourceFile], pl.Expr | None] | None = None) -> pl.LazyFrame:
        """The whole trace as one LazyFrame with ORIGIN (file index) and RECORD (row in file).

        `where(file)`: an optional predicate on the file's columns as stored, applied in its scan
        before any cast, so that Parquet row-group statistics can skip what it excludes (work
        units, scale/slices.py); RECORD stays the row's place in the whole file."""
        frames = [_canonical(i, f, self.extra_columns, None if where is None else where(f)) for i, f in enumerate(self.files)]
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]

    def scan_file(self, index: int) -> pl.LazyFrame:
        return _canonical(index, self.files[index], self.extra_columns)

    def read_error(self, exc: BaseException) -> TraceError:
        """A decode error surfaced while reading the union: find which file(s) cause it."""
        lines = []
        for i, f in enumerate(self.files):
            try:
                self.scan_file(i).collect()
            except (pl.exceptions.PolarsError, OSError) as file_exc:
                typed = _csv_type_problems(f) if f.fmt == "csv" else []
                lines.extend(typed or [f"{f.path}: {_describe_decode_error(f.fmt, file_exc)}"])
        if not lines:
            lines.append(f"{self.display_path}: could not be read ({str(exc).splitlines()[0]})")
        if len(lines) == 1:
            return TraceError(lines[0], path=self.display_path)
        body = "\n".join(f"  - {line}" for line in lines)
        return TraceError(f"{self.display_path}: {len(lines)} files cannot be read:\n{body}")


class _Problems:
    """Collects every metadata-level problem before raising, so one run reports them all."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: Path | str, problem: str) -> None:
        self.lines.append(f"{path}: {problem}")

    def raise_if_any(self, display_path: str) -> None:
        if not self.lines:
            return
        if len(self.lines) == 1:
            raise TraceError(self.lines[0], path=display_path)
        body = "\n".join(f"  - {line}" for line in self.lines)
        raise TraceError(f"{display_path}: {len(self.lines)} problems found:\n{body}", path=display_path)


def open_trace(path: str | Path) -> FileSource:
    """Resolve `path` (file, directory or glob) to its trace files and check their metadata."""
    display = str(path)
    problems = _Problems()
    candidates = _resolve(display)
    files: list[SourceFile] = []
    for candidate in candidates:
        source = _inspect(candidate, problems, single=len(candidates) == 1)
        if source is not None:
            files.append(source)
    problems.raise_if_any(display)
    extras = _extra_columns(files)
    return FileSource(display_path=display, files=files, extra_columns=extras, provenance=_read_provenance(display))


def _read_provenance(display: str) -> Provenance | None:
    path = provenance_path(display.rstrip("/"))
    if not path.is_file():
        return None
    try:
        return from_dict(json.loads(path.read_text("utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ProvenanceFormatError) as exc:
        raise TraceError(
            f"{path}: not a provenance file of coherence-diag convert ({_first_line(exc)}); "
            "expected the JSON `convert` writes next to a trace, or no such file",
            path=display,
        ) from None


def _resolve(display: str) -> list[Path]:
    path = Path(display)
    if any(ch in display for ch in _GLOB_CHARS) and not path.exists():
        matches = sorted(Path(p) for p in globlib.glob(display, recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in TRACE_SUFFIXES]
        if not files:
            raise TraceError(
                f"{display}: the pattern matches no .parquet or .csv trace files", path=display
            )
        return files
    if not path.exists():
        raise TraceError(f"{display}: no such file or directory", path=display)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TRACE_SUFFIXES
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise TraceError(
                f"{display}: the directory contains no trace files (expected .parquet or .csv shards, "
                "or one file per layer such as scheduler.parquet)",
                path=display,
            )
        return files
    return [path]


def _inspect(path: Path, problems: _Problems, *, single: bool) -> SourceFile | None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        problems.add(path, f"cannot be read ({exc.strerror or exc})")
        return None
    if size == 0:
        problems.add(path, "the file is empty (expected a Parquet or CSV trace)")
        return None
    suffix = path.suffix.lower()
    hint = path.stem.lower() if path.stem.lower() in schema.LAYERS else None
    if head == b"PAR1":
        fmt = "parquet"
    elif suffix in PARQUET_SUFFIXES:
        problems.add(path, "not a Parquet file (it does not start with the Parquet magic bytes PAR1)")
        return None
    elif suffix in CSV_SUFFIXES:
        fmt = "csv"
    else:
        problems.add(
            path,
            f"not a Parquet or CSV file (suffix {suffix or 'none'!r}; expected a .parquet or .csv trace)",
        )
        return None

    meta = None
    if fmt == "parquet":
        meta = _parquet_metadata(path, problems)
        columns = None if meta is None else _parquet_columns(path, problems)
    else:
        columns = _csv_columns(path, problems)
    if columns is None:
        return None
    missing = [c for c in schema.CORE_COLUMNS if c not in columns and not (c == "layer" and hint)]
    if missing:
        if "layer" in missing and len(missing) == 1:
            problems.add(
                path,
                "no `layer` column and the file name is not a layer name (expected a `layer` column, "
                f"or a file named after its layer: {', '.join(schema.LAYERS)})",
            )
        else:
            problems.add(
                path,
                f"missing required column(s) {', '.join(missing)} (every trace row needs ts, layer, event; "
                f"found columns: {', '.join(columns) or 'none'})",
            )
        return None
    for name, dtype in columns.items():
        if name in schema.COLUMNS and not _storable_as(name, dtype):
            kind = schema.COLUMNS[name].kind
            problems.add(
                path, f"column `{name}` has type {dtype}, expected {schema.describe_kind(kind)}"
            )
    single_text = _single_text_columns(meta, columns) if meta is not None else {}
    return SourceFile(path=path, fmt=fmt, layer_hint=hint, columns=columns, single_text=single_text)


def _parquet_metadata(path: Path, problems: _Problems) -> pq.FileMetaData | None:
    # Imported here: pyarrow takes ~0.2 s to import, which a CSV trace or a converted source never needs.
    import pyarrow.parquet as pq

    """The footer (reading it catches truncated and corrupt files); its statistics serve
    `_single_text_columns`."""
    try:
        return pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        problems.add(path, f"not a readable Parquet file ({_first_line(exc)})")
        return None


def _parquet_columns(path: Path, problems: _Problems) -> dict[str, pl.DataType] | None:
    try:
        return dict(pl.scan_parquet(path, glob=False).collect_schema())
    except Exception as exc:  # polars raises several types for corrupt files
        problems.add(path, f"not a readable Parquet file ({_first_line(exc)})")
        return None


# Writers may truncate long min/max statistics of text; values this short are never truncated.
_EXACT_STAT_BYTES = 32


def _single_text_columns(meta: pq.FileMetaData, columns: dict[str, pl.DataType]) -> dict[str, str]:
    """Known text columns whose every row group has no null and min == max, one value throughout
    (an `env` label, typically). Validation then need not decode or categorise them row by row."""
    text = [c for c, t in columns.items() if c in schema.COLUMNS and schema.COLUMNS[c].kind == "string" and t == pl.String]
    if not text:
        return {}
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    found: dict[str, str] = {}
    for column in text:
        if column not in names:
            continue
        index, values = names.index(column), set()
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_null_count or stats.null_count or not stats.has_min_max:
                break
            if stats.min != stats.max or not isinstance(stats.min, str) or len(stats.min.encode()) > _EXACT_STAT_BYTES:
                break
            values.add(stats.min)
        else:
            if len(values) == 1:
                found[column] = values.pop()
    return found


def _csv_columns(path: Path, problems: _Problems) -> dict[str, pl.DataType] | None:
    bad_offset = _first_invalid_utf8(path)
    if bad_offset is not None:
        problems.add(path, f"not UTF-8 text (invalid byte at offset {bad_offset}); CSV traces must be UTF-8")
        return None
    try:
        header = pl.scan_csv(path, infer_schema=False, glob=False).collect_schema()
    except Exception as exc:
        problems.add(path, f"not a readable CSV file ({_first_line(exc)})")
        return None
    # The stored type of a CSV column is decided by the parse types we ask for (see _csv_dtype).
    return {name: _csv_dtype(name) for name in header}


def _first_invalid_utf8(path: Path, chunk_bytes: int = 1 << 20) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset
    return None


def _csv_dtype(name: str) -> pl.DataType:
    col = schema.COLUMNS.get(name)
    if col is None or col.kind in ("timestamp", "bool", "string"):
        return pl.String()
    return schema.DTYPE[col.kind]


def _storable_as(name: str, dtype: pl.DataType) -> bool:
    kind = schema.COLUMNS[name].kind
    if dtype == pl.Null:
        return True
    if kind == "timestamp":
        return isinstance(dtype, pl.Datetime) or dtype.is_integer() or dtype == pl.String
    if kind == "string":
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Enum, pl.Categorical))
    if kind == "bool":
        return dtype == pl.Boolean or dtype.is_integer() or dtype == pl.String
    if kind in ("int", "count"):
        return dtype.is_integer()
    return dtype.is_numeric()  # float, duration_ms, fraction


def _extra_columns(files: list[SourceFile]) -> dict[str, pl.DataType]:
    """Unknown columns are kept; where shards disagree on their type they become text."""
    extras: dict[str, pl.DataType] = {}
    for f in files:
        for name, dtype in f.columns.items():
            if name in schema.COLUMNS:
                continue
            if name in extras and extras[name] != dtype:
                extras[name] = pl.String()
            else:
                extras.setdefault(name, dtype)
    return extras


def _scan_file(f: SourceFile) -> pl.LazyFrame:
    if f.fmt == "parquet":
        return pl.scan_parquet(f.path, glob=False)  # resolved paths: `[`, `*`, `?` in a file name are literal
    return pl.scan_csv(f.path, schema_overrides=f.columns, infer_schema=False, glob=False)


def _canonical(index: int, f: SourceFile, extras: dict[str, pl.DataType], where: pl.Expr | None = None) -> pl.LazyFrame:
    exprs: list[pl.Expr] = []
    for name, dtype in f.columns.items():
        if name in schema.COLUMNS:
            exprs.append(_cast_known(name, dtype))
        else:
            exprs.append(pl.col(name).cast(extras[name], strict=False))
    if "layer" not in f.columns:
        exprs.append(pl.lit(f.layer_hint, pl.String).alias("layer"))
    elif f.layer_hint:
        exprs[list(f.columns).index("layer")] = _cast_known("layer", f.columns["layer"]).fill_null(
            pl.lit(f.layer_hint)
        )
    exprs.append(pl.lit(index, pl.Int32).alias(ORIGIN))
    rows = _scan_file(f).with_row_index(RECORD)
    return (rows if where is None else rows.filter(where)).select(*exprs, pl.col(RECORD))


def _cast_known(name: str, dtype: pl.DataType) -> pl.Expr:
    kind = schema.COLUMNS[name].kind
    col = pl.col(name)
    if kind == "timestamp":
        return _timestamp_ns(col, dtype).alias(name)
    if kind == "bool":
        if dtype == pl.String:
            lowered = col.str.strip_chars().str.to_lowercase()
            return (
                pl.when(lowered.is_in(["true", "1", "yes", "t", "y"]))
                .then(True)
                .when(lowered.is_in(["false", "0", "no", "f", "n"]))
                .then(False)
                .otherwise(None)
                .alias(name)
            )
        return col.cast(pl.Boolean).alias(name)
    if kind == "string":
        return col.cast(pl.String).alias(name)
    return col.cast(schema.DTYPE[kind]).alias(name)


def _timestamp_ns(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        # epoch() is UTC for zoned values; naive values are UTC by the trace format
        return col.dt.epoch("ns")
    if dtype.is_integer():
        return col.cast(pl.Int64)
    if dtype == pl.Null:
        return col.cast(pl.Int64)
    text = col.str.strip_chars()
    parsed = [text.str.strptime(pl.Datetime("ns", "UTC"), fmt, strict=False) for fmt in _TZ_FORMATS]
    parsed += [
        text.str.strptime(pl.Datetime("ns"), fmt, strict=False).dt.replace_time_zone("UTC")
        for fmt in _NAIVE_FORMATS
    ]
    as_int = text.str.to_integer(strict=False)
    return pl.coalesce(as_int, pl.coalesce(parsed).dt.epoch("ns"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _csv_type_problems(f: SourceFile) -> list[str]:
    """Every typed CSV column with values that do not parse: count, example values and rows."""
    typed = {name: dtype for name, dtype in f.columns.items() if dtype != pl.String}
    if not typed:
        return []
    try:
        raw = pl.scan_csv(f.path, infer_schema=False, glob=False).with_row_index("_row")
        bad = {name: pl.col(name).is_not_null() & pl.col(name).cast(dtype, strict=False).is_null() for name, dtype in typed.items()}
        found = raw.select(
            *[cond.sum().alias(f"{name}__n") for name, cond in bad.items()],
            *[pl.col(name).filter(cond).head(EXAMPLES).implode().alias(f"{name}__values") for name, cond in bad.items()],
            *[pl.col("_row").filter(cond).head(EXAMPLES).implode().alias(f"{name}__rows") for name, cond in bad.items()],
        ).collect().row(0, named=True)
    except (pl.exceptions.PolarsError, OSError):
        return []
    lines = []
    for name in typed:
        n = found[f"{name}__n"]
        if n:
            values = ", ".join(repr(v) for v in found[f"{name}__values"])
            rows = ", ".join(str(r + 1) for r in found[f"{name}__rows"])
            kind = schema.describe_kind(schema.COLUMNS[name].kind)
            lines.append(f"{f.path}: column `{name}` expects {kind}; {n} value(s) do not parse, e.g. {values} (data row {rows})")
    return lines


def _describe_decode_error(fmt: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if fmt == "csv" and "could not parse" in text:
        # polars: could not parse `abc` as dtype `f64` at column 'dur_ms' (column number 5)
        return f"a value has the wrong type: {text} (expected the type of trace-format.md)"
    if fmt == "csv":
        return f"not a well-formed CSV trace ({text})"
    return f"the Parquet data cannot be decoded ({text}); the file may be corrupt or truncated"
