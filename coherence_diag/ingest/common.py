"""What the source adapters share: resolving `--from` paths to files, reading their headers,
failing loudly on input that is not the named source, and the shape of one mapped file.

An adapter maps one input file to a `Mapped`: trace rows in canonical types with the RECORD each
came from, the records it could not map (audit rows, source.py), how many records it read, and
how each column it fills was obtained (model/provenance.py `ColumnOrigin`).
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from coherence_diag import schema
from coherence_diag.errors import TraceError
from coherence_diag.ingest.source import RECORD, audit_rows, empty_audit
from coherence_diag.model import ColumnOrigin, MetricSummary

_GLOB_CHARS = set("*?[")


@dataclass
class Mapped:
    """One input file mapped to trace rows."""

    frame: pl.DataFrame  # schema columns (canonical types), extra columns, RECORD
    records: int  # input records read
    audit: pl.DataFrame = field(default_factory=empty_audit)
    columns: tuple[ColumnOrigin, ...] = ()
    notes: tuple[str, ...] = ()
    summaries: tuple[MetricSummary, ...] = ()  # metrics with no row form (model/provenance.py)
    # (layer, event, column): rows made without `column` so that the user's --map can supply it
    # (e.g. a device looked up from the host); those still without it afterwards are dropped
    pending: tuple[tuple[str, str, str], ...] = ()


Reader = Callable[[Path, str], Mapped]  # (file, source name) -> mapped
TimedReader = Callable[[Path, str, int | None], Mapped]  # ... given `--start` (ns) for a snapshot without a time


def resolve(spec: str, source: str, suffixes: Sequence[str], *, names: Sequence[str] = ()) -> list[Path]:
    """The files `--from SOURCE spec` names: a file, a directory (its files with one of
    `suffixes`, or of `names` when given) or a glob. TraceError when there are none."""
    path = Path(spec)
    if any(ch in spec for ch in _GLOB_CHARS) and not path.exists():
        files = sorted(Path(p) for p in globlib.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise TraceError(f"{spec}: the pattern matches no file (expected {source} input)", path=spec)
        return files
    if not path.exists():
        raise TraceError(f"{spec}: no such file or directory (expected {source} input)", path=spec)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir()
            if p.is_file() and not p.name.startswith((".", "_"))
            and (p.name in names if names else p.suffix.lower() in suffixes)
        )
        if not files:
            wanted = ", ".join(names) if names else ", ".join(f"*{s}" for s in suffixes)
            raise TraceError(f"{spec}: the directory holds no {source} input (expected {wanted})", path=spec)
        return files
    return [path]


def not_the_source(path: Path, source: str, expected: str, found: Sequence[str]) -> TraceError:
    shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "none"
    return TraceError(f"{path}: not a {source} file: expected {expected} (found fields: {shown})", path=str(path))


def record_error(path: Path, record: int, problem: str, expected: str) -> TraceError:
    """One line: the file, the record (1-based, as a person counts data rows or lines), the
    problem and what was expected."""
    return TraceError(f"{path}: record {record + 1}: {problem}; expected {expected}", path=str(path))


def csv_header(path: Path, source: str) -> list[str]:
    try:
        return list(pl.scan_csv(path, infer_schema=False, glob=False).collect_schema())
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a readable {source} CSV file ({_first_line(exc)})", path=str(path)) from None


def read_csv_text(path: Path, fields: Sequence[str], source: str) -> pl.DataFrame:
    """The named fields of a CSV file as text, with RECORD (0-based data row)."""
    try:
        return (
            pl.scan_csv(path, infer_schema=False, glob=False)
            .select(list(fields))
            .with_row_index(RECORD)
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a readable {source} CSV file ({_first_line(exc)})", path=str(path)) from None


def require_fields(path: Path, found: Sequence[str], fields: Sequence[str], source: str) -> None:
    if not set(fields) <= set(found):
        raise not_the_source(path, source, "fields " + ", ".join(fields), found)


def first_record(frame: pl.DataFrame, condition: pl.Expr) -> int | None:
    """The RECORD of the first row where `condition` holds, or None."""
    hit = frame.lazy().filter(condition).select(pl.col(RECORD).min()).collect().item()
    return None if hit is None else int(hit)


def integer_text(column: str) -> pl.Expr:
    """An integer field given as text ("12", "12.0"); null where it is not a whole number."""
    text = pl.col(column).str.strip_chars()
    as_float = text.cast(pl.Float64, strict=False)
    whole = as_float.is_finite() & (as_float == as_float.round(0)) & (as_float.abs() < 2.0**62)
    return pl.when(whole).then(as_float.cast(pl.Int64)).otherwise(None)


def set_aside_unparsed(
    frame: pl.DataFrame, checks: Sequence[tuple[str, pl.Expr]], *, file: str, layer: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows kept, audit): a record whose field fails its check (`field`, expr true when bad) is
    set aside as `unparsed_field:<field>` (the first failing field names it)."""
    if not checks:
        return frame, empty_audit()
    marks = frame.select(
        RECORD, *[expr.fill_null(False).alias(f"__bad{i}") for i, (_, expr) in enumerate(checks)]
    )
    audits = []
    already = pl.lit(False)
    for i, (name, _) in enumerate(checks):
        bad = pl.col(f"__bad{i}") & ~already
        audits.append(audit_rows(marks.filter(bad), file=file, layer=layer, reason="unparsed_field", column=name))
        already = already | pl.col(f"__bad{i}")
    keep = marks.select(~already).to_series()
    audit = pl.concat(audits) if audits else empty_audit()
    return frame.filter(keep), audit


def filled_columns(frame: pl.DataFrame) -> set[tuple[str, str]]:
    """The (layer, column) pairs with a value on some row of the layer."""
    present = frame.group_by("layer").agg(pl.all().is_not_null().any())
    return {(row["layer"], c) for row in present.iter_rows(named=True) for c, v in row.items() if v and c != "layer"}


def request_ids(stem: str) -> pl.Expr:
    """`<file stem>#<record number>` (1-based): public request traces carry no request id."""
    return (pl.lit(f"{stem}#") + (pl.col(RECORD) + 1).cast(pl.String)).alias("request_id")


REQUEST_ID_FORMULA = "`<file stem>#<record number>` (1-based): the trace has no request id, each record is one request"


def arrive_rows(raw: pl.DataFrame, stem: str, ts_ns: pl.Expr, columns: dict[str, pl.Expr]) -> pl.DataFrame:
    """One scheduler `arrive` row per record: ts, request id, and `columns` (name -> expression)."""
    return raw.select(
        ts_ns.alias("ts"),
        pl.lit("scheduler").alias("layer"),
        pl.lit("arrive").alias("event"),
        request_ids(stem),
        *[expr.cast(schema.dtype_of(name)).alias(name) if name in schema.COLUMNS else expr.alias(name) for name, expr in columns.items()],
        pl.col(RECORD),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
