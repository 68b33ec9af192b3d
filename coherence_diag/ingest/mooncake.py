"""`mooncake`: the Mooncake (Moonshot AI / Kimi) FAST'25 request traces.

JSON lines, one request per line: `timestamp` (integer milliseconds since the trace start),
`input_length` (prompt tokens), `output_length` (output tokens), `hash_ids` (prefix-block
hashes, no trace column: not converted). Each line becomes a scheduler `arrive` row. The clock is
relative (aligned with other sources, or `--start`, by convert). The published conversation trace
quantises arrivals to ~3 s ticks: burstiness below that scale is not in the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from coherence_diag.errors import TraceError
from coherence_diag.ingest.common import (
    REQUEST_ID_FORMULA,
    Mapped,
    arrive_rows,
    first_record,
    not_the_source,
    record_error,
    set_aside_unparsed,
)
from coherence_diag.ingest.source import RECORD
from coherence_diag.model import ColumnOrigin

NAME = "mooncake"
FIELDS = ("timestamp", "input_length", "output_length")
EXPECTED_TIME = "timestamp in integer milliseconds since the trace start"


def read(path: Path, name: str = NAME) -> Mapped:
    _check_first_line(path, name)
    try:
        raw = pl.read_ndjson(path, infer_schema_length=None).with_row_index(RECORD)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: not JSON lines of a {name} trace ({text})", path=str(path)) from None
    if not set(FIELDS) <= set(raw.columns):
        raise not_the_source(path, name, "JSON lines with fields " + ", ".join(FIELDS), [c for c in raw.columns if c != RECORD])
    for field in FIELDS:
        dtype = raw.schema[field]
        if not (dtype.is_numeric() or dtype == pl.Null):
            bad = first_record(raw, pl.col(field).is_not_null())
            raise record_error(path, bad or 0, f"{field} is {dtype}, not a number", f"{field} as a JSON number")
    ms = pl.col("timestamp").cast(pl.Float64)
    fractional = ms.is_not_null() & (ms != ms.round(0))
    if raw.select(fractional.any()).item():
        bad = first_record(raw, fractional)
        value = raw.filter(pl.col(RECORD) == bad)["timestamp"].item()
        whole = raw.select((ms.is_not_null() & ~fractional).any()).item()
        problem = f"timestamp {value} has a fraction" + (" while other records are whole milliseconds (mixed units)" if whole else " (seconds?)")
        raise record_error(path, bad or 0, problem, EXPECTED_TIME)
    whole = [(f, pl.col(f).is_null() | (pl.col(f).cast(pl.Float64) != pl.col(f).cast(pl.Float64).round(0))) for f in FIELDS]
    kept, audit = set_aside_unparsed(raw, whole, file=str(path), layer="scheduler")
    frame = arrive_rows(
        kept, path.stem, (pl.col("timestamp").cast(pl.Float64) * 1e6).round(0).cast(pl.Int64),
        {"prompt_tokens": pl.col("input_length"), "output_tokens": pl.col("output_length")},
    )
    return Mapped(frame, raw.height, audit, COLUMNS, NOTES)


def _check_first_line(path: Path, name: str) -> None:
    """A file that is not JSON lines fails here with its first line, before Polars guesses."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 20)
        value = json.loads(first) if first.strip() else None
    except (OSError, UnicodeDecodeError, ValueError):
        raise record_error(path, 0, "not a JSON object", "JSON lines with fields " + ", ".join(FIELDS)) from None
    if not isinstance(value, dict):
        raise record_error(path, 0, "not a JSON object", "JSON lines with fields " + ", ".join(FIELDS))


COLUMNS = (
    ColumnOrigin("scheduler", "ts", "observed", NAME, ("timestamp",), note="milliseconds since the trace start x 10^6; a relative clock"),
    ColumnOrigin("scheduler", "event", "derived", NAME, (), "`arrive`: each line is one request's arrival"),
    ColumnOrigin("scheduler", "request_id", "derived", NAME, (), REQUEST_ID_FORMULA),
    ColumnOrigin("scheduler", "prompt_tokens", "observed", NAME, ("input_length",)),
    ColumnOrigin("scheduler", "output_tokens", "observed", NAME, ("output_length",)),
)
NOTES = ("hash_ids (512-token prefix-block hashes) have no trace column and are not converted",)
SUPPLIES = ("scheduler arrive rows: ts (relative clock), request_id (record number), prompt_tokens, output_tokens",)
CANNOT_SUPPLY = (
    "latency of any kind: the trace has none",
    "pools, devices, priorities, SLOs; queue, GPU, network and hypervisor layers",
    "prefix-cache reuse (hash_ids): no trace column",
)
