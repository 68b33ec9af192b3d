"""Several `--from SOURCE PATH` inputs merged into one trace source, aligned by time, with the
user's values applied and the provenance of every (layer, column) of the schema.

Clocks: a source whose timestamps are wall-clock (`absolute`, e.g. Azure's) is kept as it is; a
source whose timestamps count from its own start (`relative`: Mooncake, BurstGPT, GenTD26's
anonymised clock) is shifted to start at `start_ns` when given (`convert --start`), else at the
earliest start of the absolute sources, else left as it is (its first record then stands at its
own offset from 1970-01-01 UTC). The shift is recorded in the provenance (`offset_s`).

Rows a source made pending a user value (`Mapped.pending`: vllm-otlp's exec rows need a device
that only `--map` may give) and still lack it once the user's values are applied are dropped,
counted in that source's notes: a value is looked up or left out, never guessed.
"""

from __future__ import annotations

import polars as pl

from coherence_diag import schema
from coherence_diag.errors import InputError
from coherence_diag.ingest.common import filled_columns
from coherence_diag.ingest.registry import Opened, open_source
from coherence_diag.ingest.source import ORIGIN, FrameSource
from coherence_diag.ingest.usermap import UserValues
from coherence_diag.model import ColumnOrigin, Provenance, SourceUse


def open_sources(specs: list[tuple[str, str]], user: UserValues | None = None, *, start_ns: int | None = None) -> FrameSource:
    """Map every (source name, path) and merge them into one FrameSource with provenance."""
    if not specs:
        raise InputError("give at least one --from SOURCE PATH")
    opened = [open_source(name, spec, start_ns=start_ns) for name, spec in specs]
    starts = [_start(o) for o in opened]
    absolute = [s for o, s in zip(opened, starts) if o.adapter.clock == "absolute" and s is not None]
    anchor = start_ns if start_ns is not None else (min(absolute) if absolute else None)
    frames: list[pl.DataFrame] = []
    origins: list[str] = []
    offsets: list[int] = []
    for o, first in zip(opened, starts):
        offset = 0 if (o.adapter.clock == "absolute" or anchor is None or first is None) else anchor - first
        frame = o.frame.with_columns(pl.col(ORIGIN) + len(origins))
        if offset:
            frame = frame.with_columns(pl.col("ts") + offset)
        frames.append(frame)
        origins.extend(str(f) for f in o.files)
        offsets.append(offset)
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    supplied: list[ColumnOrigin] = []
    if user:
        frame, supplied = _apply(frame, user)
    frame, dropped = _drop_incomplete(frame, opened)
    uses = [
        SourceUse(
            name=o.adapter.name, path=o.spec, records=o.records, rows=o.frame.height - sum(n for _, _, n in lost), clock=o.adapter.clock,
            offset_s=offset / 1e9, cannot_supply=o.adapter.cannot_supply, notes=o.notes + tuple(note for _, note, _ in lost),
            unmapped=_counts(o.audit), summaries=o.summaries,
        )
        for o, offset, lost in zip(opened, offsets, dropped)
    ]
    given = _dedupe([c for o in opened for c in o.columns] + supplied)
    given = _still_given(given, frame, {layer for lost in dropped for layer, _, _ in lost})
    display = " + ".join(f"{name}:{spec}" for name, spec in specs)
    provenance = Provenance(tuple(uses), _with_absent(given, frame))
    audit = pl.concat([o.audit for o in opened])
    return FrameSource(display, frame, tuple(origins), audit, provenance)


def _drop_incomplete(frame: pl.DataFrame, opened: list[Opened]) -> tuple[pl.DataFrame, list[list[tuple[str, str, int]]]]:
    """Rows a source made pending a user value (`Mapped.pending`) that is still missing are
    dropped, never filled by a guess; each source gets a note per (layer, event, column) dropped."""
    dropped: list[list[tuple[str, str, int]]] = []  # per source: (layer, note, rows)
    first = 0
    for o in opened:
        lost: list[tuple[str, str, int]] = []
        mine = pl.col(ORIGIN).is_between(first, first + len(o.files) - 1)
        for layer, event, column in o.pending:
            incomplete = mine & (pl.col("layer") == layer) & (pl.col("event") == event)
            if column in frame.columns:
                incomplete = incomplete & pl.col(column).is_null()
            n = int(frame.select(incomplete.sum()).item())
            if n:
                frame = frame.filter(~incomplete)
                lost.append((layer, f"{n:,} {layer} {event} rows dropped: no {column} known (give one with --map, e.g. {column} from host)", n))
        dropped.append(lost)
        first += len(o.files)
    return frame, dropped


def _still_given(given: list[ColumnOrigin], frame: pl.DataFrame, layers: set[str]) -> list[ColumnOrigin]:
    """After rows were dropped from `layers`, the (layer, column) pairs left without a value are
    no longer given by anyone."""
    if not layers:
        return given
    filled = filled_columns(frame.filter(pl.col("layer").is_in(sorted(layers))))
    return [c for c in given if c.layer not in layers or (c.layer, c.column) in filled]


def _counts(audit: pl.DataFrame) -> dict[str, int]:
    totals = audit.group_by("reason", "column").agg(pl.col("rows").sum()).sort("reason", "column")
    return {f"{r}:{c}": int(n) for r, c, n in totals.iter_rows()}


def _start(o: Opened) -> int | None:
    if o.frame.is_empty():
        return None
    value = o.frame["ts"].min()
    return None if value is None else int(value)  # type: ignore[arg-type]


def _apply(frame: pl.DataFrame, user: UserValues) -> tuple[pl.DataFrame, list[ColumnOrigin]]:
    origins: list[ColumnOrigin] = []
    present_layers = set(frame["layer"].unique().to_list())
    for (layer, column), (value, by) in user.constants.items():
        if layer not in present_layers:
            raise InputError(f"{by}: {layer}.{column} is set, but no source gives {layer} rows")
        dtype = schema.dtype_of(column)
        current = pl.col(column) if column in frame.columns else pl.lit(None, dtype)
        frame = frame.with_columns(pl.when(pl.col("layer") == layer).then(pl.lit(value, dtype)).otherwise(current).alias(column))
        origins.append(ColumnOrigin(layer, column, "supplied", "user", (), None, f"{by}: {value!r} on every {layer} row"))
    for lookup in user.lookups:
        if lookup.key not in frame.columns:
            raise InputError(f"{lookup.by}: map.{lookup.column} looks up `{lookup.key}`, which no source gives")
        mapped = pl.col(lookup.key).cast(pl.String).replace_strict(lookup.values, default=None, return_dtype=pl.String)
        current = pl.col(lookup.column) if lookup.column in frame.columns else pl.lit(None, pl.String)
        layers = sorted(set(frame.filter(pl.col(lookup.key).is_not_null())["layer"].unique().to_list()))
        frame = frame.with_columns(pl.coalesce(mapped, current).alias(lookup.column))
        for layer in layers:
            if lookup.column in schema.LAYER_COLUMNS[layer]:
                origins.append(
                    ColumnOrigin(
                        layer, lookup.column, "supplied", "user", (lookup.key,), None,
                        f"{lookup.by}: looked up from {lookup.key} ({len(lookup.values)} entries)",
                    )
                )
    return frame, origins


def _dedupe(columns: list[ColumnOrigin]) -> list[ColumnOrigin]:
    return list(dict.fromkeys(columns))


def _with_absent(given: list[ColumnOrigin], frame: pl.DataFrame) -> tuple[ColumnOrigin, ...]:
    """Every (layer, column) of the schema: what the sources and the user give, in schema order,
    and `absent` for the rest."""
    by_pair: dict[tuple[str, str], list[ColumnOrigin]] = {}
    for c in given:
        by_pair.setdefault((c.layer, c.column), []).append(c)
    out: list[ColumnOrigin] = []
    for layer in schema.LAYERS:
        for column in schema.LAYER_COLUMNS[layer]:
            entries = by_pair.get((layer, column))
            if entries:
                out.extend(entries)
            else:
                out.append(ColumnOrigin(layer, column, "absent", note=None if column != "ts" else f"no source gives {layer} rows"))
    return tuple(out)
