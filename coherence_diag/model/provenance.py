"""Where every column of a converted trace came from (`coherence-diag convert`, `analyze --from`).

For each (layer, column) of the trace schema: `observed` (read from an input field), `derived`
(computed from input fields by a stated formula), `supplied` (given by the user: a flag or a map
file), `simulated` (made by the fleet simulator around replayed input) or `absent` (no source
gives it). The report carries it so that "no GPU samples" is never mistaken for "GPU idle".

Plain data, a leaf of the result model: `to_dict` / `from_dict` are the JSON form of the
`TRACE.provenance.json` file written next to a converted trace and of the report's `provenance`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PROVENANCE_SCHEMA_VERSION = "1"
ColumnStatus = Literal["observed", "derived", "supplied", "simulated", "absent"]
COLUMN_STATUSES: tuple[str, ...] = ("observed", "derived", "supplied", "simulated", "absent")


@dataclass(frozen=True)
class ColumnOrigin:
    """How one source (or the user) gives one column of one layer."""

    layer: str
    column: str
    status: ColumnStatus
    source: str | None = None  # the source name (`azure-llm`, ...), "user", or "simulator"; None when absent
    fields: tuple[str, ...] = ()  # the input fields it is read or derived from
    formula: str | None = None  # derived: how, in words and symbols
    note: str | None = None  # an approximation, a unit conversion, why it is absent


@dataclass(frozen=True)
class MetricSummary:
    """A metric that has no row form, summarised per window (`prometheus`, `dcgm` sources): a
    latency histogram (count, mean = sum / count, quantiles interpolated within the bucket that
    holds them, as Prometheus' histogram_quantile does: estimates, not observed values) or a
    counter of events that name no request (its increase, counter resets handled)."""

    metric: str
    series: str  # the series' labels, `name=value` joined by commas
    kind: Literal["histogram", "counter"]
    unit: str  # of count (counters) or of mean and quantiles (histograms)
    window_start: str  # ISO-8601 UTC
    window_end: str
    cumulative: bool  # True: one snapshot, totals since the process started (no window of its own)
    count: float  # observations (histogram) or increase (counter)
    mean: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # "p50" -> estimate
    quantile_buckets: dict[str, str] = field(default_factory=dict)  # "p50" -> "(0.5, 1]": the bucket it lies in
    resets: int = 0  # counter drops (process restarts) within the window


@dataclass(frozen=True)
class SourceUse:
    """One `--from SOURCE PATH` of a conversion."""

    name: str
    path: str
    records: int  # input records read
    rows: int  # trace rows made from them
    clock: Literal["absolute", "relative"]  # timestamps of the wall clock, or relative to the trace start
    offset_s: float  # seconds added to the source's timestamps to align it with the others
    cannot_supply: tuple[str, ...] = ()  # what this kind of source can never give (convert --list)
    notes: tuple[str, ...] = ()
    unmapped: dict[str, int] = field(default_factory=dict)  # input records not converted, by `reason:field`
    summaries: tuple[MetricSummary, ...] = ()  # metrics with no row form (histograms, event counters)


@dataclass(frozen=True)
class Provenance:
    sources: tuple[SourceUse, ...]
    columns: tuple[ColumnOrigin, ...]
    schema_version: str = PROVENANCE_SCHEMA_VERSION

    def of(self, layer: str, column: str) -> tuple[ColumnOrigin, ...]:
        return tuple(c for c in self.columns if c.layer == layer and c.column == column)

    def by_status(self, status: str) -> tuple[ColumnOrigin, ...]:
        return tuple(c for c in self.columns if c.status == status)

    def absent_layers(self) -> tuple[str, ...]:
        """Layers of which no column is given by any source."""
        layers = dict.fromkeys(c.layer for c in self.columns)
        given = {c.layer for c in self.columns if c.status != "absent"}
        return tuple(layer for layer in layers if layer not in given)


def to_dict(provenance: Provenance) -> dict[str, Any]:
    return {
        "schema_version": provenance.schema_version,
        "sources": [_source_dict(s) for s in provenance.sources],
        "columns": [asdict(c) for c in provenance.columns],
    }


def _source_dict(source: SourceUse) -> dict[str, Any]:
    out = asdict(source)
    if not source.summaries:  # only the metrics sources have them: other provenance stays as it was
        del out["summaries"]
    return out


class ProvenanceFormatError(ValueError):
    """A provenance document that does not have the shape `to_dict` writes."""


def from_dict(data: object) -> Provenance:
    """The inverse of `to_dict`; ProvenanceFormatError naming the first wrong entry."""
    if not isinstance(data, dict) or data.get("schema_version") != PROVENANCE_SCHEMA_VERSION:
        raise ProvenanceFormatError(f"expected an object with schema_version {PROVENANCE_SCHEMA_VERSION!r}")
    try:
        sources = tuple(
            SourceUse(
                name=str(s["name"]), path=str(s["path"]), records=int(s["records"]), rows=int(s["rows"]),
                clock=_clock(s["clock"]), offset_s=float(s["offset_s"]),
                cannot_supply=tuple(str(x) for x in s.get("cannot_supply", ())), notes=tuple(str(x) for x in s.get("notes", ())),
                unmapped={str(k): int(v) for k, v in s.get("unmapped", {}).items()},
                summaries=tuple(_summary(m) for m in s.get("summaries", ())),
            )
            for s in data["sources"]
        )
        columns = tuple(
            ColumnOrigin(
                layer=str(c["layer"]), column=str(c["column"]), status=_status(c["status"]),
                source=None if c.get("source") is None else str(c["source"]), fields=tuple(str(x) for x in c.get("fields", ())),
                formula=None if c.get("formula") is None else str(c["formula"]), note=None if c.get("note") is None else str(c["note"]),
            )
            for c in data["columns"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProvenanceFormatError(f"a source or column entry is malformed ({exc})") from None
    return Provenance(sources, columns)


def _summary(m: dict[str, Any]) -> MetricSummary:
    kind = m["kind"]
    if kind not in ("histogram", "counter"):
        raise ValueError(f"summary kind {kind!r} is not histogram or counter")
    return MetricSummary(
        metric=str(m["metric"]), series=str(m["series"]), kind=kind, unit=str(m["unit"]),
        window_start=str(m["window_start"]), window_end=str(m["window_end"]), cumulative=bool(m["cumulative"]),
        count=float(m["count"]), mean=None if m.get("mean") is None else float(m["mean"]),
        quantiles={str(k): float(v) for k, v in m.get("quantiles", {}).items()},
        quantile_buckets={str(k): str(v) for k, v in m.get("quantile_buckets", {}).items()},
        resets=int(m.get("resets", 0)),
    )


def _status(value: object) -> ColumnStatus:
    if value not in COLUMN_STATUSES:
        raise ValueError(f"status {value!r} is not one of {', '.join(COLUMN_STATUSES)}")
    return value  # type: ignore[return-value]


def _clock(value: object) -> Literal["absolute", "relative"]:
    if value not in ("absolute", "relative"):
        raise ValueError(f"clock {value!r} is not absolute or relative")
    return value
