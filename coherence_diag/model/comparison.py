"""The result of comparing two traces, or two environments of one trace (`compare`).

`compare.compare_traces` / `compare.compare_envs` build a `Comparison`; render/compare.py renders
it (terminal, Markdown, JSON: schemas/comparison-v1.schema.json). Measure units are named by
`unit` ("ms", "frac", "rps", "index"); units.py formats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coherence_diag.model.report import Finding

COMPARISON_SCHEMA_VERSION = "1"

# "changed": a measure with no better direction moved; "within noise": a latency / TTFT / queue-wait
# quantile moved but the distribution test on that signal finds no significant shift.
Change = Literal["better", "worse", "unchanged", "changed", "within noise", "n/a"]


@dataclass(frozen=True)
class Side:
    label: str  # what tables call it: the path, or "path [env=onprem]"
    path: str
    env: str | None
    rows: int
    requests: int
    start: str | None
    end: str | None


@dataclass(frozen=True)
class MeasureChange:
    name: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    base: float | None
    candidate: float | None
    delta: float | None  # candidate - base
    relative_change: float | None  # (candidate - base) / |base|
    change: Change


@dataclass(frozen=True)
class ComponentChange:
    """One component of the index breakdown on both sides: a CI layer or link, or a pool's DI/HCL."""

    kind: Literal["layer", "link", "pool"]
    name: str  # "compute", "scheduler_compute", or "<pool>.DI" / "<pool>.HCL"
    better: str  # "higher" for CI components, "lower" for DI and HCL
    base: float | None
    candidate: float | None
    delta: float | None


@dataclass(frozen=True)
class Shift:
    """Two-sample comparison of one per-request signal, workload-matched (features/shift.py)."""

    signal: str
    description: str
    significant: bool | None  # None: too few requests on a side to test
    direction: Literal["slower", "faster", "none"] | None
    n_base: float | None
    n_candidate: float | None
    n_matched: float | None
    matched: bool
    token_columns: tuple[str, ...]
    cells: int
    mix_distance: float | None
    ks_stat: float | None
    ks_p: float | None
    ad_stat: float | None
    ad_p: float | None
    mw_p: float | None
    mw_effect: float | None
    wasserstein_ms: float | None
    wasserstein_rel: float | None
    p50_base: float | None
    p50_candidate: float | None
    p99_base: float | None
    p99_candidate: float | None
    p50_ratio: float | None
    p99_ratio: float | None
    raw_p99_ratio: float | None
    tail_ratio_base: float | None
    tail_ratio_candidate: float | None
    tail_ratio_change: float | None
    slo_violation_base: float | None
    slo_violation_candidate: float | None
    slo_violation_delta: float | None
    slo_elasticity: float | None
    failure_rate_base: float | None
    failure_rate_candidate: float | None
    failure_rate_delta: float | None


@dataclass(frozen=True)
class FindingChange:
    rule: str
    status: Literal["new", "resolved", "persisting"]
    kind: str
    domain: str
    severity_base: str | None
    severity_candidate: str | None
    score_base: float | None
    score_candidate: float | None
    summary: str  # the candidate's finding, or the base's when resolved


@dataclass(frozen=True)
class Comparison:
    base: Side
    candidate: Side
    measures: tuple[MeasureChange, ...]
    components: tuple[ComponentChange, ...]
    shifts: tuple[Shift, ...]
    findings: tuple[FindingChange, ...]
    pair_findings: tuple[Finding, ...]
    alpha: float
    min_ks: float
    tool_version: str
    schema_version: str = COMPARISON_SCHEMA_VERSION

    @property
    def worse(self) -> tuple[MeasureChange, ...]:
        return tuple(m for m in self.measures if m.change == "worse")

    @property
    def significant_shifts(self) -> tuple[Shift, ...]:
        return tuple(s for s in self.shifts if s.significant)
