"""`azure-llm`: the Azure LLM inference traces (Splitwise, ISCA'24; AzurePublicDataset).

CSV, one request per data row: `TIMESTAMP` (`YYYY-MM-DD HH:MM:SS.fffffff`, 7 fractional digits,
time zone not stated: read as UTC), `ContextTokens` (prompt tokens), `GeneratedTokens` (output
tokens). Each row becomes a scheduler `arrive` row with its token counts: the trace records when
requests arrived and how large they were, never how long they took.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coherence_diag.ingest.common import (
    REQUEST_ID_FORMULA,
    Mapped,
    arrive_rows,
    csv_header,
    first_record,
    integer_text,
    read_csv_text,
    record_error,
    require_fields,
    set_aside_unparsed,
)
from coherence_diag.model import ColumnOrigin

NAME = "azure-llm"
FIELDS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f"
EXPECTED_TIME = "TIMESTAMP as 'YYYY-MM-DD HH:MM:SS.fffffff'"


def read(path: Path, name: str = NAME) -> Mapped:
    require_fields(path, csv_header(path, name), FIELDS, name)
    raw = read_csv_text(path, FIELDS, name)
    text = pl.col("TIMESTAMP").str.strip_chars()
    parsed = text.str.to_datetime(TIME_FORMAT, strict=False, time_unit="ns", time_zone="UTC")
    numeric = text.cast(pl.Float64, strict=False).is_not_null()
    raw = raw.with_columns(parsed.dt.epoch("ns").alias("__ts"), numeric.alias("__numeric"))
    _refuse_mixed_clock(path, raw)
    kept, audit = set_aside_unparsed(
        raw,
        [
            ("TIMESTAMP", pl.col("__ts").is_null()),
            ("ContextTokens", integer_text("ContextTokens").is_null()),
            ("GeneratedTokens", integer_text("GeneratedTokens").is_null()),
        ],
        file=str(path), layer="scheduler",
    )
    frame = arrive_rows(
        kept, path.stem, pl.col("__ts"),
        {"prompt_tokens": integer_text("ContextTokens"), "output_tokens": integer_text("GeneratedTokens")},
    )
    return Mapped(frame, raw.height, audit, COLUMNS)


def _refuse_mixed_clock(path: Path, raw: pl.DataFrame) -> None:
    """Timestamps in two units (the documented text and bare numbers such as epoch seconds) are
    not one clock: refuse rather than guess which is right."""
    parsed = pl.col("__ts").is_not_null()
    if raw.is_empty():
        return
    some_text, some_numbers = raw["__ts"].is_not_null().any(), raw["__numeric"].any()
    if some_numbers and some_text:
        record = first_record(raw, pl.col("__numeric"))
        value = raw.filter(pl.col("_record") == record)["TIMESTAMP"].item()
        raise record_error(path, record or 0, f"TIMESTAMP {value!r} is a bare number while other records are date-times (mixed units)", EXPECTED_TIME)
    if some_numbers and not raw.filter(parsed).height:
        raise record_error(path, 0, f"TIMESTAMP {raw['TIMESTAMP'][0]!r} is a bare number, not a date-time", EXPECTED_TIME)


COLUMNS = (
    ColumnOrigin(
        "scheduler", "ts", "observed", NAME, ("TIMESTAMP",), note="7 fractional digits kept to the nanosecond; no time zone given: read as UTC"
    ),
    ColumnOrigin("scheduler", "event", "derived", NAME, (), "`arrive`: each record is one request's invocation"),
    ColumnOrigin("scheduler", "request_id", "derived", NAME, (), REQUEST_ID_FORMULA),
    ColumnOrigin("scheduler", "prompt_tokens", "observed", NAME, ("ContextTokens",)),
    ColumnOrigin("scheduler", "output_tokens", "observed", NAME, ("GeneratedTokens",)),
)

SUPPLIES = ("scheduler arrive rows: ts, request_id (record number), prompt_tokens, output_tokens",)
CANNOT_SUPPLY = (
    "latency of any kind (dispatch, first token, completion): the trace has none",
    "pools, devices, priorities, SLOs; queue, GPU, network and hypervisor layers",
)
