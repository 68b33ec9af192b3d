"""`vllm-otlp`: vLLM's per-request `llm_request` spans, as OTLP-JSON lines (the OpenTelemetry
Collector file exporter's default: one `ExportTraceServiceRequest` per line, `resourceSpans[]`
-> `scopeSpans[]` -> `spans[]`, times as decimal nanosecond strings, ids in hex).

vLLM writes one `llm_request` span per finished request (vllm/tracing SpanAttributes; the v1
engine's OutputProcessor.do_tracing): the span starts at the request's arrival (wall clock) and
carries, in seconds, `gen_ai.latency.time_to_first_token`, `.e2e`, `.time_in_queue`,
`.time_in_model_prefill`, `.time_in_model_decode`, `.time_in_model_inference`, the token
counts `gen_ai.usage.prompt_tokens` / `completion_tokens`, `gen_ai.request.id` and (newer
versions) `gen_ai.response.finish_reasons`. From them, per request:

| trace row | from |
|---|---|
| scheduler `arrive` | span start |
| scheduler `dispatch` | start + time_in_queue |
| scheduler `first_token` | start + time_to_first_token |
| scheduler `complete` / `drop` | start + e2e (else the span end); `drop` when finish_reasons says abort or error |
| gpu `exec` prefill | [dispatch, dispatch + time_in_model_prefill] |
| gpu `exec` decode | [prefill end, + time_in_model_decode] (else time_in_model_inference - prefill) |

Optional child spans of an `llm_request` named (or with attribute `phase`) `prefill` / `decode`
replace the derived exec row of their phase with their own start and end.

Clocks: vLLM takes arrival, TTFT and e2e from the wall clock and the queue, prefill and decode
times from the engine's monotonic clock, so the instants put together from both can disagree.
They are clamped to be monotone within a request (arrive <= dispatch <= first_token <= end) and
never after the span end; how many were moved is in the provenance notes. Negative or zero
latencies are vLLM's way of saying a step was never reached (an unset timestamp is 0): no row.

v1 spans name no host, device or pool: they come from resource attributes (`host.name` or
`k8s.node.name`; `coherence.device`; `coherence.pool`, e.g. through OTEL_RESOURCE_ATTRIBUTES)
or from the user's `--map` (device and pool looked up from host). Exec rows need a device:
they are made only where one is known or can be looked up, and dropped when the map gives none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from coherence_diag import schema
from coherence_diag.errors import TraceError
from coherence_diag.ingest.common import Mapped, filled_columns, first_record, integer_text, not_the_source, record_error, set_aside_unparsed
from coherence_diag.ingest.source import RECORD, audit_rows
from coherence_diag.model import ColumnOrigin

NAME = "vllm-otlp"
SPAN = "llm_request"
PHASES = ("prefill", "decode")
EXPECTED = "OTLP-JSON lines (resourceSpans) of vLLM llm_request spans"
_OTHER_SIGNALS = ("resourceMetrics", "resourceLogs", "resourceProfiles")
NS_PER_S = 1_000_000_000
END_TOLERANCE_NS = 1_000_000  # a later instant by less than this is float-seconds rounding, not a clock mismatch
MIN_UNIX_NS = 10**17  # 1973 in ns; seconds, milliseconds and microseconds since 1970 are all below

# Span attributes read, by what they become: every key vLLM has written for it (first present wins).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "request_id": ("gen_ai.request.id",),
    "prompt_tokens": ("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
    "output_tokens": ("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
    "ttft_s": ("gen_ai.latency.time_to_first_token",),
    "e2e_s": ("gen_ai.latency.e2e",),
    "queue_s": ("gen_ai.latency.time_in_queue",),
    "prefill_s": ("gen_ai.latency.time_in_model_prefill",),
    "decode_s": ("gen_ai.latency.time_in_model_decode",),
    "inference_s": ("gen_ai.latency.time_in_model_inference",),
    "finish": ("gen_ai.response.finish_reasons", "gen_ai.response.finish_reason"),
    "phase": ("phase",),
}
SECONDS = ("ttft_s", "e2e_s", "queue_s", "prefill_s", "decode_s", "inference_s")
TOKENS = ("prompt_tokens", "output_tokens")
RESOURCE: dict[str, tuple[str, ...]] = {
    "host": ("host.name", "k8s.node.name"),
    "device": ("coherence.device",),
    "pool": ("coherence.pool",),
}
FINISHED = {"stop": "complete", "length": "complete", "abort": "drop", "error": "drop"}


def _key(field: str) -> str:
    return ATTRIBUTES[field][0]


# --- reading: JSON lines -> one flat frame of spans ------------------------------------------


def read(path: Path, name: str = NAME) -> Mapped:
    spans, others = _flatten(path, name)
    records = spans.height + others.height
    unmapped = audit_rows(others, file=str(path), layer="scheduler", reason="unmapped_record", column="resourceSpans", warning=True)
    if spans.is_empty():
        raise TraceError(f"{path}: not a {name} file: no span in it; expected {EXPECTED}", path=str(path))
    spans = _typed(spans)
    requests = spans.filter(pl.col("name").eq_missing(SPAN))
    if requests.is_empty():
        found = ", ".join(sorted(set(spans["name"].drop_nulls().to_list()))[:8])
        raise TraceError(f"{path}: not a {name} file: no {SPAN} span (found spans: {found}); expected {EXPECTED}", path=str(path))
    _refuse_other_units(path, requests)
    children, foreign = _children(spans, requests)
    unmapped = pl.concat([unmapped, audit_rows(foreign, file=str(path), layer="scheduler", reason="unmapped_record", column="name", warning=True)])
    kept, audit = set_aside_unparsed(requests, _checks(), file=str(path), layer="scheduler")
    if kept.is_empty():
        raise _nothing_usable(path, requests, audit)
    kept_children, child_audit = set_aside_unparsed(
        children.filter(pl.col("__parent_record").is_in(kept[RECORD].implode())),
        [("startTimeUnixNano", pl.col("__start").is_null()), ("endTimeUnixNano", ~(pl.col("__end") >= pl.col("__start")).fill_null(False))],
        file=str(path), layer="gpu",
    )
    derived = _derive(kept)
    frame, exec_kinds, notes = _rows(derived, kept_children)
    return Mapped(
        frame, records, pl.concat([unmapped, audit, child_audit]), _origins(frame, exec_kinds), notes, pending=(("gpu", "exec", "device"),)
    )


def _flatten(path: Path, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every span of the file as one row of text fields (RECORD: its 0-based number in the file),
    and the records that are not spans (lines of another OTLP signal)."""
    rows: dict[str, list[Any]] = {c: [] for c in _FLAT}
    others: list[int] = []
    record = 0
    for line, doc in _lines(path, name):
        if "resourceSpans" not in doc:
            if not any(k in doc for k in _OTHER_SIGNALS):
                raise not_the_source(path, name, f"{EXPECTED}; line {line} has no resourceSpans", list(doc))
            others.append(record)
            record += 1
            continue
        for rs in _objects(doc.get("resourceSpans"), path, line, "resourceSpans"):
            resource = _attributes((rs.get("resource") or {}).get("attributes"), path, line)
            picked = {field: _first(resource, keys) for field, keys in RESOURCE.items()}
            scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))  # the latter: OTLP before 0.15
            for ss in _objects(scopes, path, line, "scopeSpans"):
                for span in _objects(ss.get("spans"), path, line, "spans"):
                    attrs = _attributes(span.get("attributes"), path, line)
                    rows["line"].append(line)
                    rows[RECORD].append(record)
                    rows["name"].append(_text(span.get("name")))
                    for field, key in (("__trace", "traceId"), ("__span", "spanId"), ("__parent", "parentSpanId")):
                        rows[field].append(_text(span.get(key)))
                    rows["__start_text"].append(_text(span.get("startTimeUnixNano")))
                    rows["__end_text"].append(_text(span.get("endTimeUnixNano")))
                    for field, value in picked.items():
                        rows[f"__res_{field}"].append(None if value is None else value[1])
                    for field, keys in ATTRIBUTES.items():
                        value = _first(attrs, keys)
                        rows[f"__{field}_kind"].append(None if value is None else value[0])
                        rows[f"__{field}_text"].append(None if value is None else value[1])
                    record += 1
    spans = pl.DataFrame(rows, schema={c: (pl.UInt32 if c in ("line", RECORD) else pl.String) for c in _FLAT})
    return spans, pl.DataFrame({RECORD: others, "line": others}, schema={RECORD: pl.UInt32, "line": pl.UInt32})


_FLAT = (
    "line", RECORD, "name", "__trace", "__span", "__parent", "__start_text", "__end_text",
    *(f"__res_{f}" for f in RESOURCE), *(f"__{f}_{part}" for f in ATTRIBUTES for part in ("kind", "text")),
)


def _lines(path: Path, name: str) -> Iterator[tuple[int, dict]]:
    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    doc = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise TraceError(f"{path}: line {number}: not JSON; expected {EXPECTED}", path=str(path)) from None
                if not isinstance(doc, dict):
                    raise TraceError(f"{path}: line {number}: a JSON {type(doc).__name__}, not an object; expected {EXPECTED}", path=str(path))
                yield number, doc
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror or exc}); expected {EXPECTED}", path=str(path)) from None


def _objects(value: object, path: Path, line: int, what: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TraceError(f"{path}: line {line}: `{what}` is not a list of objects; expected {EXPECTED}", path=str(path))
    return value


def _attributes(value: object, path: Path, line: int) -> dict[str, tuple[str, str]]:
    """OTLP key/value attributes -> key -> (value kind, value as text)."""
    out: dict[str, tuple[str, str]] = {}
    for item in _objects(value, path, line, "attributes"):
        key, typed = item.get("key"), item.get("value")
        if isinstance(key, str) and isinstance(typed, dict) and len(typed) == 1:
            kind, raw = next(iter(typed.items()))
            if kind == "arrayValue":  # e.g. finish_reasons: ["stop"]
                values = raw.get("values", []) if isinstance(raw, dict) else []
                raw = json.dumps([_text(next(iter(v.values()))) for v in values if isinstance(v, dict) and len(v) == 1])
            out[key] = (kind, _text(raw) or "")
        elif isinstance(key, str):
            out[key] = ("invalid", json.dumps(typed))
    return out


def _first(attrs: dict[str, tuple[str, str]], keys: tuple[str, ...]) -> tuple[str, str] | None:
    return next((attrs[k] for k in keys if k in attrs), None)


def _text(value: object) -> str | None:
    """A JSON scalar as text: OTLP-JSON writes 64-bit integers as strings or numbers."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- typing and checks (Polars) ----------------------------------------------------------------


def _typed(spans: pl.DataFrame) -> pl.DataFrame:
    start_text = pl.col("__start_text").str.strip_chars()
    end_text = pl.col("__end_text").str.strip_chars()
    exprs = [
        _hex_id("__trace", 16).alias("__trace_id"),
        _hex_id("__span", 8).alias("__span_id"),
        _hex_id("__parent", 8).alias("__parent_id"),
        pl.when(start_text.cast(pl.Int64, strict=False) > 0).then(start_text.cast(pl.Int64, strict=False)).alias("__start"),
        pl.when(end_text.cast(pl.Int64, strict=False) > 0).then(end_text.cast(pl.Int64, strict=False)).alias("__end"),
        start_text.cast(pl.Float64, strict=False).alias("__start_f"),
        pl.col("__request_id_text").str.strip_chars().alias("request_id"),
        pl.col("__phase_text").str.strip_chars().str.to_lowercase().alias("__phase"),
    ]
    for field in SECONDS:
        kind, text = pl.col(f"__{field}_kind"), pl.col(f"__{field}_text")
        exprs.append(pl.when(kind.is_in(["doubleValue", "intValue"])).then(text.cast(pl.Float64, strict=False)).alias(f"__{field}"))
    for field in TOKENS:
        kind = pl.col(f"__{field}_kind")
        exprs.append(pl.when(kind == "intValue").then(integer_text(f"__{field}_text")).alias(f"__{field}"))
    # finish_reasons: an array (["stop"]), the JSON text of one ('["stop"]', as vLLM sets it), or a bare string
    reasons = pl.col("__finish_text").str.replace_all(r'[\[\]"\s]', "").str.split(",").list.eval(pl.element().filter(pl.element() != ""))
    exprs.append(reasons.alias("__finish"))
    return spans.with_columns(exprs)


def _hex_id(column: str, size: int) -> pl.Expr:
    """A trace or span id in hex (the OTLP-JSON spec) or base64 (protobuf's JSON mapping) as
    lowercase hex; null when it is neither (or empty: a root span's parent)."""
    text = pl.col(column).str.strip_chars()
    decoded = text.str.decode("base64", strict=False)
    return (
        pl.when(text.str.contains(f"^[0-9a-fA-F]{{{2 * size}}}$"))
        .then(text.str.to_lowercase())
        .when(decoded.bin.size() == size)
        .then(decoded.bin.encode("hex"))
    )


def _present(field: str) -> pl.Expr:
    return pl.col(f"__{field}_kind").is_not_null()


def _checks() -> list[tuple[str, pl.Expr]]:
    """(input field, true when the span cannot be used): a span is set aside as unparsed_field."""
    checks: list[tuple[str, pl.Expr]] = [
        ("startTimeUnixNano", pl.col("__start").is_null()),
        (_key("request_id"), pl.col("request_id").fill_null("") == ""),
    ]
    for field in SECONDS:
        value = pl.col(f"__{field}")
        checks.append((_key(field), _present(field) & (value.is_null() | ~value.is_finite())))
    for field in TOKENS:
        checks.append((_key(field), _present(field) & (pl.col(f"__{field}").is_null() | (pl.col(f"__{field}") < 0))))
    checks.append((_key("finish"), _present("finish") & ~pl.col("__finish").list.eval(pl.element().is_in(list(FINISHED))).list.all()))
    # the request needs an end: e2e, or a span end not before its start
    no_end = pl.col("__e2e_s").is_null() & (pl.col("__end").is_null() | (pl.col("__end") < pl.col("__start")))
    checks.append((_key("e2e_s"), no_end))
    return checks


def _refuse_other_units(path: Path, requests: pl.DataFrame) -> None:
    """Span times that are not Unix nanoseconds (seconds, ms or us: far too small) or an e2e that
    is not in seconds (a thousand times the span's own duration) are another unit: refuse."""
    small = pl.col("__start_f").is_not_null() & (pl.col("__start_f") > 0) & (pl.col("__start_f") < MIN_UNIX_NS)
    bad = first_record(requests, small)
    if bad is not None:
        value = requests.filter(pl.col(RECORD) == bad)["__start_text"].item()
        mixed = requests.select((pl.col("__start_f") >= MIN_UNIX_NS).any()).item()
        problem = f"startTimeUnixNano {value} is not in nanoseconds since 1970" + (" while other spans are (mixed units)" if mixed else "")
        raise record_error(path, bad, _where(requests, bad) + problem, "startTimeUnixNano in Unix nanoseconds")
    duration_ns = (pl.col("__end") - pl.col("__start")).cast(pl.Float64)
    ratio = pl.col("__e2e_s") * NS_PER_S / duration_ns
    judged = (duration_ns >= 10 * 1_000_000) & pl.col("__e2e_s").is_finite() & (pl.col("__e2e_s") > 0)
    bad = first_record(requests, judged & (ratio > 100))
    if bad is not None:
        row = requests.filter(pl.col(RECORD) == bad).row(0, named=True)
        mixed = requests.select((judged & (ratio <= 100)).any()).item()
        problem = (
            f"{_key('e2e_s')} = {row['__e2e_s']:g} but the span lasts {(row['__end'] - row['__start']) / NS_PER_S:g} s"
            + (" while other spans agree in seconds (mixed units)" if mixed else " (milliseconds?)")
        )
        raise record_error(path, bad, _where(requests, bad) + problem, "latency attributes in seconds")


def _where(frame: pl.DataFrame, record: int) -> str:
    line = frame.filter(pl.col(RECORD) == record)["line"].item()
    return f"span on line {line}: "


def _nothing_usable(path: Path, requests: pl.DataFrame, audit: pl.DataFrame) -> TraceError:
    first = audit.sort(pl.col("example_rows").list.first()).row(0, named=True)
    record = int(first["example_rows"][0])
    return record_error(
        path, record, _where(requests, record) + f"no usable {SPAN} span ({first['rows']} without a valid {first['column']}; this is the first)",
        f"{SPAN} spans with startTimeUnixNano, {_key('request_id')} and latency attributes in seconds",
    )


def _children(spans: pl.DataFrame, requests: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(child spans of an llm_request that name a phase, the other spans: not this source's)."""
    parents = requests.select(
        pl.col("__trace_id"), pl.col("__span_id").alias("__parent_id"), pl.col(RECORD).alias("__parent_record")
    ).filter(pl.col("__parent_id").is_not_null())
    others = spans.filter(~pl.col("name").eq_missing(SPAN)).with_columns(
        pl.coalesce(pl.col("__phase"), pl.col("name").str.to_lowercase()).alias("__phase")
    )
    joined = others.join(parents, on=["__trace_id", "__parent_id"], how="left")
    is_child = (pl.col("__parent_record").is_not_null() & pl.col("__phase").is_in(list(PHASES))).fill_null(False)
    return joined.filter(is_child), joined.filter(~is_child)


# --- derivations (Polars expressions) ----------------------------------------------------------


def _after(base: pl.Expr, field: str) -> pl.Expr:
    return base + (pl.col(f"__{field}") * NS_PER_S).round(0).cast(pl.Int64)


def _at_least(x: pl.Expr, bound: pl.Expr) -> pl.Expr:
    """x raised to bound; a null x stays null (unlike max_horizontal, which skips nulls)."""
    return pl.when(x < bound).then(bound).otherwise(x)


def _at_most(x: pl.Expr, bound: pl.Expr) -> pl.Expr:
    """x lowered to bound; a null x stays null, a null bound bounds nothing."""
    return pl.when(x > bound).then(bound).otherwise(x)


def _derive(kept: pl.DataFrame) -> pl.DataFrame:
    """The instants of each request, raw and clamped, and its exec intervals."""
    start = pl.col("__start")
    # vLLM writes 0 for an unset timestamp: a negative queue time = never scheduled, a TTFT or a
    # prefill time <= 0 = no token
    decode = pl.coalesce(pl.col("__decode_s"), pl.col("__inference_s") - pl.col("__prefill_s"))
    frame = kept.with_columns(
        pl.when(pl.col("__queue_s") >= 0).then(pl.col("__queue_s")).alias("__queue_s"),
        pl.when(pl.col("__ttft_s") > 0).then(pl.col("__ttft_s")).alias("__ttft_s"),
        pl.when(pl.col("__prefill_s") > 0).then(pl.col("__prefill_s")).alias("__prefill_s"),
        pl.when(decode > 0).then(decode).alias("__decode_s"),
        (pl.col("__decode_s").is_null() & (decode > 0)).fill_null(False).alias("__decode_from_inference"),
        pl.when(pl.col("__end") >= start).then(pl.col("__end")).alias("__end"),
        pl.col("__finish").list.eval(pl.element().replace_strict(FINISHED, default=None)).list.contains("drop").fill_null(False).alias("__dropped"),
    )
    frame = frame.with_columns(
        _after(start, "queue_s").alias("__dispatch_raw"),
        _after(start, "ttft_s").alias("__first_raw"),
        pl.coalesce(_after(start, "e2e_s"), pl.col("__end")).alias("__end_raw"),
    )
    # monotone within the request, then never after the span end
    end = pl.col("__end")
    frame = frame.with_columns(_at_least(pl.col("__dispatch_raw"), start).alias("__d"))
    frame = frame.with_columns(_at_least(pl.col("__first_raw"), pl.coalesce(pl.col("__d"), start)).alias("__f"))
    frame = frame.with_columns(_at_least(pl.col("__end_raw"), pl.coalesce(pl.col("__f"), pl.col("__d"), start)).alias("__c"))
    frame = frame.with_columns(*(_at_most(pl.col(c), end).alias(c) for c in ("__d", "__f", "__c")))
    frame = frame.with_columns(_at_most(_after(pl.col("__d"), "prefill_s"), pl.col("__c")).alias("__prefill_end"))
    frame = frame.with_columns(pl.coalesce(pl.col("__prefill_end"), pl.col("__f")).alias("__decode_start"))
    return frame.with_columns(_at_most(_after(pl.col("__decode_start"), "decode_s"), pl.col("__c")).alias("__decode_end"))


def _moved(raw: str, final: str) -> pl.Expr:
    """A clamp that moved an instant by more than float-seconds rounding."""
    return (pl.col(raw).is_not_null() & ((pl.col(final) - pl.col(raw)).abs() > END_TOLERANCE_NS)).sum()


def _rows(frame: pl.DataFrame, children: pl.DataFrame) -> tuple[pl.DataFrame, set[str], tuple[str, ...]]:
    host, device, pool = pl.col("__res_host"), pl.col("__res_device"), pl.col("__res_pool")
    common = [pl.col("request_id"), host.alias("host"), pool.alias("pool"), pl.col(RECORD)]

    def sched(event: pl.Expr, ts: str, **extra: pl.Expr) -> pl.LazyFrame:
        return frame.lazy().filter(pl.col(ts).is_not_null()).select(
            pl.col(ts).alias("ts"), pl.lit("scheduler").alias("layer"), event.alias("event"), *common,
            *(e.alias(n) for n, e in extra.items()),
        )

    finish = pl.col("__finish").list.join(",")
    scheduler = [
        sched(pl.lit("arrive"), "__start", prompt_tokens=pl.col("__prompt_tokens"), output_tokens=pl.col("__output_tokens")),
        sched(pl.lit("dispatch"), "__d", device=device),
        sched(pl.lit("first_token"), "__f"),
        sched(
            pl.when(pl.col("__dropped")).then(pl.lit("drop")).otherwise(pl.lit("complete")), "__c",
            output_tokens=pl.when(~pl.col("__dropped")).then(pl.col("__output_tokens")),
            finish_reason=pl.when(finish != "").then(finish),
        ),
    ]
    # exec rows need a device, or a host the user's map can look one up from
    locatable = device.is_not_null() | host.is_not_null()
    observed = set(children.filter(locatable.fill_null(False))["__phase"].unique().to_list()) if not children.is_empty() else set()
    has_child = children.group_by("__parent_record", "__phase").len().rename({"__parent_record": RECORD})
    gpu = []
    for phase, begin, finish_ts, tokens in (
        ("prefill", "__d", "__prefill_end", pl.col("__prompt_tokens")),
        ("decode", "__decode_start", "__decode_end", (pl.col("__output_tokens") - 1).clip(lower_bound=0)),
    ):
        own = has_child.filter(pl.col("__phase") == phase).select(RECORD)
        gpu.append(
            frame.lazy().join(own.lazy(), on=RECORD, how="anti")
            .filter(pl.col(begin).is_not_null() & pl.col(finish_ts).is_not_null() & locatable)
            .select(
                pl.col(begin).alias("ts"), pl.lit("gpu").alias("layer"), pl.lit("exec").alias("event"), *common,
                device.alias("device"), ((pl.col(finish_ts) - pl.col(begin)) / 1e6).alias("dur_ms"), pl.lit(phase).alias("phase"),
                tokens.cast(pl.Int64).alias("tokens"), pl.lit(False).alias("__observed"),
            )
        )
    parent = frame.select(pl.col(RECORD).alias("__parent_record"), pl.col("request_id").alias("__parent_request"))
    gpu.append(
        children.lazy().join(parent.lazy(), on="__parent_record").filter(locatable)
        .select(
            pl.col("__start").alias("ts"), pl.lit("gpu").alias("layer"), pl.lit("exec").alias("event"),
            pl.col("__parent_request").alias("request_id"),
            host.alias("host"), pool.alias("pool"), pl.col(RECORD), device.alias("device"),
            ((pl.col("__end") - pl.col("__start")) / 1e6).alias("dur_ms"), pl.col("__phase").alias("phase"),
            pl.lit(None, pl.Int64).alias("tokens"), pl.lit(True).alias("__observed"),
        )
    )
    rows = pl.concat([*scheduler, *gpu], how="diagonal_relaxed").collect()
    kinds = set()
    if rows.filter(pl.col("__observed").eq(False)).height:
        kinds.add("derived")
    if rows.filter(pl.col("__observed")).height:
        kinds.add("observed")
    rows = rows.drop("__observed").with_columns(
        *(pl.col(c).cast(schema.dtype_of(c)) for c in rows.columns if c in schema.COLUMNS), pl.col(RECORD).cast(pl.UInt32)
    )
    return rows, kinds, _notes(frame, observed)


def _notes(frame: pl.DataFrame, observed_phases: set[str]) -> tuple[str, ...]:
    counts = frame.select(
        pl.len().alias("n"),
        _moved("__dispatch_raw", "__d").alias("dispatch"),
        _moved("__first_raw", "__f").alias("first_token"),
        _moved("__end_raw", "__c").alias("end"),
        pl.col("__d").is_null().sum().alias("no_dispatch"),
        pl.col("__f").is_null().sum().alias("no_first"),
        pl.col("__dropped").sum().alias("dropped"),
        pl.col("__decode_from_inference").sum().alias("decode_inferred"),
        (pl.col("__res_device").is_null() & pl.col("__res_host").is_null()).sum().alias("unlocated"),
    ).row(0, named=True)
    notes = [
        f"clock clamping ({counts['n']} requests): vLLM takes arrival, TTFT and e2e from the wall clock and queue, prefill and "
        f"decode times from the engine's monotonic clock; instants moved to keep arrive <= dispatch <= first_token <= end <= "
        f"span end: dispatch {counts['dispatch']}, first_token {counts['first_token']}, complete/drop {counts['end']}",
        "dispatch = arrival + time_in_queue omits the time between arrival and queueing (input processing): "
        "it is early by that time",
    ]
    if counts["no_dispatch"]:
        notes.append(f"{counts['no_dispatch']} requests have no dispatch row: time_in_queue absent or negative (never scheduled)")
    if counts["no_first"]:
        notes.append(f"{counts['no_first']} requests have no first_token row: time_to_first_token absent or 0 (no token generated)")
    if counts["dropped"]:
        notes.append(f"{counts['dropped']} requests end with a drop row: finish_reasons abort or error")
    if counts["decode_inferred"]:
        notes.append(f"{counts['decode_inferred']} decode spans from time_in_model_inference - time_in_model_prefill (no time_in_model_decode)")
    if counts["unlocated"]:
        notes.append(
            f"{counts['unlocated']} requests have no gpu exec rows: their resource names no device (coherence.device) and no host "
            f"(host.name) to look one up from with --map"
        )
    if observed_phases:
        notes.append(f"exec rows of phase {', '.join(sorted(observed_phases))} observed from child spans where present")
    notes.append(
        "vLLM writes a span when a request finishes: requests still running when the file was cut are not in it "
        "(nor aborted requests, in vLLM versions that do not trace aborts)"
    )
    return tuple(notes)


# --- provenance --------------------------------------------------------------------------------

_TIMES = "startTimeUnixNano", "endTimeUnixNano"
_RES = {f: tuple(f"resource.{k}" for k in keys) for f, keys in RESOURCE.items()}
_CLAMP_NOTE = "clamped to be monotone within a request and to end by the span end (vLLM mixes a wall and a monotonic clock): see notes"


def _origins(frame: pl.DataFrame, exec_kinds: set[str]) -> tuple[ColumnOrigin, ...]:
    """What the adapter gives, kept to the (layer, column) pairs the frame fills."""
    k = _key
    candidates = [
        ColumnOrigin("scheduler", "ts", "observed", NAME, ("startTimeUnixNano",), note="arrive rows: the span start (vLLM's arrival time)"),
        ColumnOrigin(
            "scheduler", "ts", "derived", NAME, (*_TIMES, k("queue_s"), k("ttft_s"), k("e2e_s")),
            "dispatch = start + time_in_queue; first_token = start + time_to_first_token; complete/drop = start + e2e (else span end)",
            _CLAMP_NOTE,
        ),
        ColumnOrigin(
            "scheduler", "event", "derived", NAME, (k("finish"),),
            "arrive, dispatch, first_token per span; complete, or drop when finish_reasons is abort or error",
        ),
        ColumnOrigin("scheduler", "request_id", "observed", NAME, (k("request_id"),)),
        ColumnOrigin("scheduler", "host", "observed", NAME, _RES["host"]),
        ColumnOrigin("scheduler", "device", "observed", NAME, _RES["device"], note="on dispatch rows"),
        ColumnOrigin("scheduler", "pool", "observed", NAME, _RES["pool"]),
        ColumnOrigin("scheduler", "prompt_tokens", "observed", NAME, ATTRIBUTES["prompt_tokens"], note="on arrive rows"),
        ColumnOrigin("scheduler", "output_tokens", "observed", NAME, ATTRIBUTES["output_tokens"], note="on arrive and complete rows"),
        ColumnOrigin("gpu", "event", "derived", NAME, (), "`exec`: one prefill and one decode span per request"),
        ColumnOrigin("gpu", "request_id", "observed", NAME, (k("request_id"),)),
        ColumnOrigin("gpu", "host", "observed", NAME, _RES["host"]),
        ColumnOrigin("gpu", "device", "observed", NAME, _RES["device"]),
        ColumnOrigin("gpu", "pool", "observed", NAME, _RES["pool"]),
    ]
    derived_exec = [
        ColumnOrigin(
            "gpu", "ts", "derived", NAME, (*_TIMES, k("queue_s"), k("prefill_s")),
            "prefill: dispatch; decode: prefill end (start + time_in_queue + time_in_model_prefill), else first_token", _CLAMP_NOTE,
        ),
        ColumnOrigin(
            "gpu", "dur_ms", "derived", NAME, (k("prefill_s"), k("decode_s"), k("inference_s")),
            "time_in_model_prefill x 1000; time_in_model_decode x 1000 (else (time_in_model_inference - time_in_model_prefill) x 1000)",
            "cut where the span would end after the request's end",
        ),
        ColumnOrigin("gpu", "phase", "derived", NAME, (), "`prefill` and `decode`, one span each"),
        ColumnOrigin(
            "gpu", "tokens", "derived", NAME, (*ATTRIBUTES["prompt_tokens"], *ATTRIBUTES["output_tokens"]),
            "prefill: prompt_tokens; decode: completion_tokens - 1 (the first token comes from the prefill)",
            "prompt tokens served from the prefix cache are counted too",
        ),
    ]
    observed_exec = [
        ColumnOrigin("gpu", "ts", "observed", NAME, ("startTimeUnixNano",), note="child spans named prefill or decode"),
        ColumnOrigin("gpu", "dur_ms", "derived", NAME, _TIMES, "(endTimeUnixNano - startTimeUnixNano) / 10^6", "child spans"),
        ColumnOrigin("gpu", "phase", "observed", NAME, ("name", "phase"), note="child spans: their name or `phase` attribute"),
    ]
    candidates += (derived_exec if "derived" in exec_kinds else []) + (observed_exec if "observed" in exec_kinds else [])
    filled = filled_columns(frame)
    return tuple(o for o in candidates if (o.layer, o.column) in filled)


SUPPLIES = (
    "scheduler rows per request: arrive, dispatch, first_token, complete or drop; prompt/output tokens; host, device, pool "
    "from resource attributes",
    "gpu exec rows: prefill and decode per request (derived from latencies, or observed child spans) where a device is known",
)
CANNOT_SUPPLY = (
    "batch sizes and co-scheduled requests: each span is one request",
    "requests still running when the file was cut; aborted requests in vLLM versions that do not trace them",
    "GPU samples (utilization, memory); queue depth; network and hypervisor layers",
)
