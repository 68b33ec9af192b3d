"""The result of analyzing one trace: what an analysis found, independent of how it is shown.

Every output (JSON, terminal, later HTML) renders a `Report`; nothing computes in a renderer.
Field names follow report-contract.md; units are in the names (`_ms`, `_rps`), and a finding's
evidence carries the unit of each feature value (`Evidence`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from coherence_diag.model.evidence import Evidence
from coherence_diag.model.provenance import Provenance

SCHEMA_VERSION = "1"


def iso_utc(ns: int) -> str:
    """Int64 ns since the epoch as the report's timestamp text: ISO-8601 UTC, microseconds, Z."""
    seconds, rem = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Quantiles:
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    inference: int = 0
    batch: int = 0
    completed: int = 0
    timeout: int = 0
    dropped: int = 0
    unfinished: int = 0
    retried: int = 0


@dataclass(frozen=True)
class Metrics:
    latency_ms: Quantiles = field(default_factory=Quantiles)
    queue_wait_ms: Quantiles = field(default_factory=Quantiles)
    ttft_ms: Quantiles = field(default_factory=Quantiles)
    nominal_utilization: float | None = None
    effective_utilization: float | None = None
    timeout_rate: float | None = None
    drop_rate: float | None = None
    slo_attainment: float | None = None
    goodput_rps: float | None = None
    # Additions beyond the contract's minimum.
    throughput_rps: float | None = None
    nominal_utilization_source: str | None = None  # "gpu_util" | "exec_busy_time"
    requests: RequestCounts = field(default_factory=RequestCounts)


@dataclass(frozen=True)
class Indices:
    CI: float | None = None
    DI: float | None = None
    WPI: float | None = None
    HCL: float | None = None


@dataclass(frozen=True)
class IndexBreakdown:
    """Where the indices come from: CI components, per-pool DI/HCL, and the timeline."""

    layers: dict[str, float | None] = field(default_factory=dict)  # scheduler, compute, network, serving
    links: dict[str, float | None] = field(default_factory=dict)  # scheduler_compute, ..., end_to_end
    pools: dict[str, dict[str, float | None]] = field(default_factory=dict)  # pool -> {DI, HCL}
    timeline: tuple[dict[str, object], ...] = ()  # per window: window_start, CI, DI, HCL, wave_extent
    wave_episodes: int = 0  # excursion episodes seen by WPI


@dataclass(frozen=True)
class Evaluability:
    evaluated: bool
    missing: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class AbsentEvidence:
    """A signal a finding would have used but the trace could not give."""

    signal: str
    missing: tuple[str, ...] = ()  # trace columns that would give it
    reason: str | None = None  # why it is undefined in this trace


@dataclass(frozen=True)
class Finding:
    rule: str
    kind: Literal["mode", "pattern"]
    mode: str | None
    domain: str
    supporting_domains: tuple[str, ...]
    severity: Severity
    score: float
    summary: str
    evidence: Evidence  # a plain mapping given here becomes Evidence of details (no units)
    # Evidence completeness in [0, 1]: the weight share of the rule's corroborating signals that
    # this trace could measure (1 when all could). The signature itself always held.
    confidence: float = 1.0
    corroborated_by: tuple[str, ...] = ()  # corroborating signals that were measured and held
    absent_evidence: tuple[AbsentEvidence, ...] = ()  # optional signals the trace could not give
    estimated_inputs: tuple[str, ...] = ()  # inputs estimated from weaker telemetry, and how

    def __post_init__(self) -> None:
        if not isinstance(self.evidence, Evidence):
            if not isinstance(self.evidence, Mapping):
                raise TypeError(f"Finding.evidence must be a mapping, got {type(self.evidence).__name__}")
            object.__setattr__(self, "evidence", Evidence.of(self.evidence))


@dataclass(frozen=True)
class UnexplainedIndex:
    """An index in its bad range that no finding of medium severity or more accounts for: said
    explicitly, never left to silence."""

    index: str
    value: float
    bad_range: str  # e.g. "< 0.65"
    weakest_components: tuple[str, ...]  # CI: the lowest layer/link components, "name value"
    not_evaluable_rules: tuple[str, ...]  # rules this trace could not evaluate (might have explained it)
    message: str


@dataclass(frozen=True)
class FeatureReading:
    """One feature of a trace: its value, or (undefined) the columns that would give it or why
    it is undefined."""

    value: float | None
    unit: str
    missing: tuple[str, ...] = ()  # when undefined for lack of columns: those columns
    reason: str | None = None  # when undefined although its columns are present: why


@dataclass(frozen=True)
class TraceFacts:
    path: str
    rows: int
    layers: dict[str, int]
    envs: tuple[str, ...]
    start: str | None
    end: str | None
    requests: int
    duration_s: float | None = None
    columns: tuple[str, ...] = ()
    set_aside: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    trace: TraceFacts
    metrics: Metrics
    indices: Indices
    findings: tuple[Finding, ...]
    evaluability: dict[str, Evaluability]
    window_s: float
    tool_version: str
    index_breakdown: IndexBreakdown = field(default_factory=IndexBreakdown)
    schema_version: str = SCHEMA_VERSION
    unexplained_indices: tuple[UnexplainedIndex, ...] = ()
    # Every feature the analysis computed, by name (`analyze --features`); None when not asked for.
    features: dict[str, FeatureReading] | None = None
    # Where each column came from, for a converted trace (`convert`, `analyze --from`); None for
    # a trace written in the trace format directly.
    provenance: Provenance | None = None
