"""`burstgpt`: the BurstGPT LLM serving traces (Azure OpenAI GPT service of a university campus).

CSV, one request per data row: `Timestamp` (seconds since the trace start), `Model` (`ChatGPT`,
`GPT-4`), `Request tokens`, `Response tokens`, `Total tokens`, `Log Type` (`Conversation log` or
`API log`). Each row becomes a scheduler `arrive` row with its token counts. A request with zero
response tokens failed (BurstGPT's own convention): its `output_tokens` is left empty (0 would
read as a request that generated nothing) and the extra column `failed` is true. When it failed is
not recorded, so no `drop` row is made: a failure time would be invented.
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
from coherence_diag.ingest.source import RECORD, audit_rows
from coherence_diag.model import ColumnOrigin

NAME = "burstgpt"
FIELDS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")
LOG_TYPES = ("Conversation log", "API log")
EXPECTED_TIME = "Timestamp in seconds since the trace start (a number)"


def read(path: Path, name: str = NAME) -> Mapped:
    require_fields(path, csv_header(path, name), FIELDS, name)
    raw = read_csv_text(path, FIELDS, name)
    seconds = pl.col("Timestamp").str.strip_chars().cast(pl.Float64, strict=False)
    looks_like_date = pl.col("Timestamp").str.contains(r"\d{4}-\d{2}-\d{2}|:")
    raw = raw.with_columns(seconds.alias("__s"))
    if raw.select(looks_like_date.fill_null(False).any()).item():
        bad = first_record(raw, looks_like_date.fill_null(False))
        value = raw.filter(pl.col(RECORD) == bad)["Timestamp"].item()
        numbers = raw["__s"].is_not_null().any()
        problem = f"Timestamp {value!r} is a date-time" + (" while other records are seconds (mixed units)" if numbers else "")
        raise record_error(path, bad or 0, problem, EXPECTED_TIME)
    known = pl.col("Log Type").str.strip_chars().is_in(LOG_TYPES)
    unmapped = audit_rows(raw.filter(~known.fill_null(False)), file=str(path), layer="scheduler", reason="unmapped_record", column="Log Type")
    raw = raw.filter(known.fill_null(False))
    kept, audit = set_aside_unparsed(
        raw,
        [
            ("Timestamp", ~(pl.col("__s").is_finite())),
            ("Request tokens", integer_text("Request tokens").is_null()),
            ("Response tokens", integer_text("Response tokens").is_null()),
        ],
        file=str(path), layer="scheduler",
    )
    response = integer_text("Response tokens")
    frame = arrive_rows(
        kept, path.stem, (pl.col("__s") * 1e9).round(0).cast(pl.Int64),
        {
            "prompt_tokens": integer_text("Request tokens"),
            "output_tokens": pl.when(response > 0).then(response).otherwise(None),
            "model": pl.col("Model"),
            "log_type": pl.col("Log Type").str.strip_chars(),
            "failed": response == 0,
        },
    )
    return Mapped(frame, raw.height + int(unmapped["rows"].sum()), pl.concat([unmapped, audit]), COLUMNS, NOTES)


COLUMNS = (
    ColumnOrigin("scheduler", "ts", "observed", NAME, ("Timestamp",), note="seconds since the trace start x 10^9; a relative clock"),
    ColumnOrigin("scheduler", "event", "derived", NAME, (), "`arrive`: each record is one request"),
    ColumnOrigin("scheduler", "request_id", "derived", NAME, (), REQUEST_ID_FORMULA),
    ColumnOrigin("scheduler", "prompt_tokens", "observed", NAME, ("Request tokens",)),
    ColumnOrigin(
        "scheduler", "output_tokens", "observed", NAME, ("Response tokens",),
        note="empty for failed requests (Response tokens = 0); extra column `failed` marks them",
    ),
)
NOTES = (
    "failed requests (Response tokens = 0) are arrive rows with `failed` = true and no output_tokens; no drop row (the failure time is not recorded)",
    "Model and Log Type are kept as the extra columns `model` and `log_type` (no trace column)",
)
SUPPLIES = ("scheduler arrive rows: ts (relative clock), request_id (record number), prompt_tokens, output_tokens; extra: model, log_type, failed",)
CANNOT_SUPPLY = (
    "latency of any kind, and when a failed request failed",
    "pools, devices, priorities, SLOs; queue, GPU, network and hypervisor layers",
)
