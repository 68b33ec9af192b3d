"""The sources `convert --from SOURCE PATH` knows: name -> adapter module, with what each can and
cannot supply (`convert --list`). A new source is one module with `read(path, name) -> Mapped`
and one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.ingest import alibaba_gentd26, azure_llm, burstgpt, dcgm, mooncake, prometheus, vllm_otlp
from coherence_diag.ingest.common import Mapped, Reader, TimedReader, resolve
from coherence_diag.ingest.source import ORIGIN, RECORD
from coherence_diag.model import ColumnOrigin, MetricSummary


@dataclass(frozen=True)
class Adapter:
    name: str
    title: str
    reads: str  # the input, for --list and messages
    read: Reader
    clock: Literal["absolute", "relative"]
    supplies: tuple[str, ...]
    cannot_supply: tuple[str, ...]
    suffixes: tuple[str, ...] = ()  # files of a directory it reads
    names: tuple[str, ...] = ()  # ... or these file names
    directory_notes: Callable[[Path], tuple[str, ...]] | None = None
    arrivals: bool = True  # gives request arrivals (`simulate --arrivals` can replay it)
    read_at: TimedReader | None = None  # reads a metrics snapshot that carries no time at `--start`


SOURCES: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter(
            azure_llm.NAME, "Azure LLM inference trace 2023/2024 (Splitwise)", "CSV: TIMESTAMP, ContextTokens, GeneratedTokens",
            azure_llm.read, "absolute", azure_llm.SUPPLIES, azure_llm.CANNOT_SUPPLY, suffixes=(".csv",),
        ),
        Adapter(
            mooncake.NAME, "Mooncake (Kimi) FAST'25 traces", "JSON lines: timestamp (ms), input_length, output_length",
            mooncake.read, "relative", mooncake.SUPPLIES, mooncake.CANNOT_SUPPLY, suffixes=(".jsonl", ".ndjson", ".json"),
        ),
        Adapter(
            burstgpt.NAME, "BurstGPT (Azure OpenAI GPT service)", "CSV: Timestamp, Model, Request tokens, Response tokens, Log Type",
            burstgpt.read, "relative", burstgpt.SUPPLIES, burstgpt.CANNOT_SUPPLY, suffixes=(".csv",),
        ),
        Adapter(
            alibaba_gentd26.NAME, "Alibaba GenAI serving metrics (GenTD26)",
            "the directory of GenTD26 metric CSVs, or one of " + ", ".join(alibaba_gentd26.FILES),
            alibaba_gentd26.read, "relative", alibaba_gentd26.SUPPLIES, alibaba_gentd26.CANNOT_SUPPLY,
            names=alibaba_gentd26.FILES, directory_notes=alibaba_gentd26.skipped, arrivals=False,
        ),
        Adapter(
            vllm_otlp.NAME, "vLLM request spans (llm_request) exported by the OpenTelemetry Collector",
            "OTLP-JSON lines (the Collector file exporter): llm_request spans with gen_ai.latency.* (s), gen_ai.usage.*, gen_ai.request.id",
            vllm_otlp.read, "absolute", vllm_otlp.SUPPLIES, vllm_otlp.CANNOT_SUPPLY, suffixes=(".json", ".jsonl"),
        ),
        Adapter(
            prometheus.NAME, "Serving-engine metrics via Prometheus (vLLM, SGLang, Triton/TensorRT-LLM, Dynamo)",
            "Prometheus text exposition (timestamps, `# ts=` lines or --start) or query_range JSON",
            prometheus.read, "absolute", prometheus.SUPPLIES, prometheus.CANNOT_SUPPLY,
            suffixes=(".prom", ".txt", ".json"), arrivals=False, read_at=prometheus.read_at,
        ),
        Adapter(
            dcgm.NAME, "NVIDIA DCGM exporter GPU metrics",
            "dcgm-exporter text exposition (timestamps, `# ts=` lines or --start) or query_range JSON",
            dcgm.read, "absolute", dcgm.SUPPLIES, dcgm.CANNOT_SUPPLY,
            suffixes=(".prom", ".txt", ".json"), arrivals=False, read_at=dcgm.read_at,
        ),
    )
}


def adapter(name: str) -> Adapter:
    if name not in SOURCES:
        raise InputError(f"--from {name!r}: unknown source; expected one of: {', '.join(SOURCES)} (convert --list)")
    return SOURCES[name]


@dataclass
class Opened:
    """Every file of one `--from SOURCE PATH`, mapped; ORIGIN counts from 0 over its files."""

    adapter: Adapter
    spec: str
    files: list[Path]
    frame: pl.DataFrame
    audit: pl.DataFrame
    records: int
    columns: tuple[ColumnOrigin, ...]
    notes: tuple[str, ...]
    summaries: tuple[MetricSummary, ...] = ()
    pending: tuple[tuple[str, str, str], ...] = ()  # see Mapped.pending


def open_source(name: str, spec: str, *, start_ns: int | None = None) -> Opened:
    kind = adapter(name)
    files = resolve(spec, name, kind.suffixes, names=kind.names)
    read_at = kind.read_at
    mapped: list[Mapped] = [read_at(f, name, start_ns) if read_at is not None else kind.read(f, name) for f in files]
    frames = [m.frame.with_columns(pl.lit(i, pl.Int32).alias(ORIGIN), pl.col(RECORD).cast(pl.UInt32)) for i, m in enumerate(mapped)]
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    columns = tuple(dict.fromkeys(c for m in mapped for c in m.columns))
    notes = tuple(dict.fromkeys(n for m in mapped for n in m.notes))
    if kind.directory_notes is not None and Path(spec).is_dir():
        notes += kind.directory_notes(Path(spec))
    audit = pl.concat([m.audit for m in mapped])
    summaries = tuple(x for m in mapped for x in m.summaries)
    pending = tuple(dict.fromkeys(p for m in mapped for p in m.pending))
    return Opened(kind, spec, files, frame, audit, sum(m.records for m in mapped), columns, notes, summaries, pending)
