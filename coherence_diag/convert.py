"""`coherence-diag convert`: foreign telemetry in, a trace in the trace format out.

    from coherence_diag.convert import convert, open_inputs
    convert([("azure-llm", "AzureLLMInferenceTrace_conv.csv")], Path("azure.parquet"))
    analyze(open_inputs([("mooncake", "conversation_trace.jsonl")]))   # in memory (analyze --from)

The inputs are mapped by their adapters (ingest/), merged and validated like any trace (the same
audit table and `--max-bad-fraction` budget) before anything is written; then the trace is
written atomically as Parquet and its provenance next to it as `TRACE.provenance.json`. A bad
input writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from coherence_diag import schema, validate
from coherence_diag.errors import InputError, TraceError
from coherence_diag.ingest import ORIGIN, RECORD, FrameSource, provenance_path
from coherence_diag.ingest.merge import open_sources
from coherence_diag.ingest.registry import SOURCES, Adapter, adapter
from coherence_diag.ingest.usermap import UserValues, parse
from coherence_diag.model import ColumnOrigin, Provenance, SourceUse
from coherence_diag.model.provenance import to_dict
from coherence_diag.outputs import replacing, write_atomic

if TYPE_CHECKING:
    from coherence_diag.simulate.arrivals import ArrivalTable


@dataclass(frozen=True)
class Converted:
    output: Path
    provenance_file: Path
    rows: int
    layers: dict[str, int]
    set_aside: dict[str, int]
    provenance: Provenance


def parse_start(text: str | None) -> int | None:
    """`--start` (ISO-8601; naive = UTC) as ns since the epoch."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--start {text!r}: not an ISO-8601 time; expected e.g. 2023-11-16T18:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def open_inputs(
    froms: list[tuple[str, str]], *, sets: list[str] | None = None, map_file: Path | None = None, start: str | None = None
) -> FrameSource:
    """The `--from` inputs mapped and merged in memory: a TraceSource for `analyze`."""
    user: UserValues = parse(sets, map_file)
    return open_sources(froms, user, start_ns=parse_start(start))


def convert(
    froms: list[tuple[str, str]],
    output: Path,
    *,
    sets: list[str] | None = None,
    map_file: Path | None = None,
    start: str | None = None,
    max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION,
) -> Converted:
    source = open_inputs(froms, sets=sets, map_file=map_file, start=start)
    checked = validate.validate(source, max_bad_fraction=max_bad_fraction)  # raises before anything is written
    assert source.provenance is not None
    frame = trace_frame(source)
    _write_parquet_atomic(frame, output)
    sidecar = write_provenance(output, source.provenance)
    return Converted(output, sidecar, frame.height, dict(sorted(checked.rows_by_layer.items())), checked.set_aside_counts(), source.provenance)


def trace_frame(source: FrameSource) -> pl.DataFrame:
    """The rows to write: schema columns first in schema order, `ts` as a UTC timestamp, then
    extra columns; sorted by time (stable: records keep their order within an instant)."""
    frame = source.scan().collect()
    known = [c for c in schema.COLUMNS if c in frame.columns]
    extra = [c for c in frame.columns if c not in schema.COLUMNS and c not in (ORIGIN, RECORD)]
    return (
        frame.sort("ts", ORIGIN, RECORD)
        .select(*known, *extra)
        .with_columns(pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC"))
    )


def _write_parquet_atomic(frame: pl.DataFrame, output: Path) -> None:
    with replacing(output) as tmp:
        frame.write_parquet(tmp, statistics=True)


def source_list() -> list[Adapter]:
    """Every source `--from` accepts (`convert --list`)."""
    return list(SOURCES.values())


# --- replaying a source's arrivals through the simulator (`simulate --arrivals`) ------------------


def read_arrivals(path: str, source: str | None = None) -> tuple[ArrivalTable, SourceUse]:
    """The request arrivals of `path`, read by the adapter of `source` (default: the first
    request source whose adapter accepts the file), for the simulator to replay."""
    from coherence_diag.simulate.arrivals import ArrivalTable  # the simulator (and SciPy) only when replaying

    candidates = [source] if source is not None else [a.name for a in SOURCES.values() if a.arrivals]
    if source is not None and not adapter(source).arrivals:
        raise InputError(
            f"--arrivals-from {source}: this source carries no request arrivals ({'; '.join(adapter(source).cannot_supply)}); "
            f"expected one of: {', '.join(a.name for a in SOURCES.values() if a.arrivals)}"
        )
    refusals = []
    for name in candidates:
        try:
            opened = open_sources([(name, path)])
            break
        except TraceError as exc:
            if source is not None:
                raise
            refusals.append(f"{name}: {str(exc).splitlines()[0]}")
    else:
        raise InputError(
            f"{path}: not a request trace of any known source ({' | '.join(refusals)}); name it with --arrivals-from SOURCE", path=path
        )
    checked = validate.validate(opened)
    arrive = checked.layers["scheduler"].filter(pl.col("event") == "arrive").sort("ts")
    prompt = arrive["prompt_tokens"] if "prompt_tokens" in opened.columns else None
    output = arrive["output_tokens"] if "output_tokens" in opened.columns else None
    assert opened.provenance is not None
    use = opened.provenance.sources[0]
    table = ArrivalTable(
        arrive["ts"].to_numpy(),
        None if prompt is None else prompt.fill_null(1).to_numpy(),  # a failed request (no output count) generated nothing
        None if output is None else output.fill_null(1).to_numpy(),
        f"{use.name}:{path}",
    )
    return table, use


def replay_provenance(frame: pl.DataFrame, use: SourceUse, table: ArrivalTable, *, scenario: str, seed: int, scale: float) -> Provenance:
    """The provenance of a simulated trace that replays `use`'s arrivals: arrival times and token
    counts derived from the source, everything else simulated."""
    present = frame.lazy().group_by("layer").agg(pl.all().is_not_null().any()).collect()
    from_source = {
        "ts": ("arrival times of the source, from its first record, / --scale", ()),
        "prompt_tokens": ("clip(prompt tokens of the source, 1, 131072)", ("prompt_tokens",)),
        "output_tokens": ("clip(output tokens of the source, 1, 8192)", ("output_tokens",)),
    }
    drawn = {"prompt_tokens": table.prompt is None, "output_tokens": table.output is None}
    columns: list[ColumnOrigin] = []
    for row in present.sort("layer").iter_rows(named=True):
        layer = row["layer"]
        for column in schema.LAYER_COLUMNS.get(layer, ()):
            if not row.get(column):
                columns.append(ColumnOrigin(layer, column, "absent"))
            elif layer == "scheduler" and column in from_source and not drawn.get(column, False):
                formula, fields = from_source[column]
                note = "on arrive rows; other scheduler rows are simulated"
                columns.append(ColumnOrigin(layer, column, "derived", use.name, fields, formula, note))
            else:
                columns.append(ColumnOrigin(layer, column, "simulated", "simulator", note=f"scenario {scenario}"))
    replayed = SourceUse(
        use.name, use.path, use.records, int(frame.filter((pl.col("layer") == "scheduler") & (pl.col("event") == "arrive")).height),
        use.clock, 0.0, use.cannot_supply,
        (f"arrivals replayed through a simulated fleet: scenario {scenario}, seed {seed}, scale {scale:g}",)
        + (("the source has no token counts: the scenario's token mix was drawn",) if table.prompt is None else ())
        + use.notes,
        use.unmapped,
    )
    return Provenance((replayed,), tuple(columns))


def write_provenance(trace: Path, provenance: Provenance) -> Path:
    """`TRACE.provenance.json`, atomically."""
    sidecar = provenance_path(trace)
    write_atomic(sidecar, json.dumps(to_dict(provenance), indent=2, ensure_ascii=False) + "\n")
    return sidecar
