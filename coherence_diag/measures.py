"""The named numbers of a report that can be compared, gated and tabulated.

One registry shared by `compare` (before/after tables, deltas), `gate` (policy checks, regression
against a baseline) and every renderer, so that a measure has one name, one unit and one
direction everywhere. Names mirror the JSON report: `latency_ms.p99` is
`report["metrics"]["latency_ms"]["p99"]`, `CI` is `report["indices"]["CI"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from coherence_diag.model import Quantiles, Report

Direction = Literal["lower", "higher", "neither"]  # "neither": context, not a quality (nominal utilization)


@dataclass(frozen=True)
class Measure:
    name: str  # stable id, e.g. "latency_ms.p99"
    label: str  # for tables, e.g. "P99 latency"
    unit: str  # "ms", "frac", "rps", "index"
    better: Direction  # which way is an improvement
    group: Literal["metrics", "indices"]
    read: Callable[[Report], float | None]
    description: str

    def value(self, report: Report) -> float | None:
        return self.read(report)


def _quantile(field: str, q: str) -> Callable[[Report], float | None]:
    def read(report: Report) -> float | None:
        quantiles: Quantiles = getattr(report.metrics, field)
        return getattr(quantiles, q)

    return read


def _metric(field: str) -> Callable[[Report], float | None]:
    return lambda report: getattr(report.metrics, field)


def _index(name: str) -> Callable[[Report], float | None]:
    return lambda report: getattr(report.indices, name)


def _build() -> dict[str, Measure]:
    out: list[Measure] = []
    for field, label, what in (
        ("latency_ms", "latency", "end-to-end latency of completed inference requests"),
        ("queue_wait_ms", "queue wait", "queue wait (arrive to first dispatch) of inference requests"),
        ("ttft_ms", "TTFT", "time to first token of inference requests"),
    ):
        for q in ("p50", "p95", "p99"):
            out.append(
                Measure(f"{field}.{q}", f"{q.upper()} {label}", "ms", "lower", "metrics", _quantile(field, q), f"{q} of the {what}, ms")
            )
    for field, label, unit, better, what in (
        (
            "nominal_utilization", "Nominal utilization", "frac", "neither",
            "device-reported busy fraction (gpu_util, or exec busy time); neither better nor worse by itself: "
            "compare it with effective utilization",
        ),
        ("effective_utilization", "Effective utilization", "frac", "higher", "fraction of device time spent on productive work"),
        ("timeout_rate", "Timeout rate", "frac", "lower", "timed-out / finished inference requests"),
        ("drop_rate", "Drop rate", "frac", "lower", "dropped / finished inference requests"),
        ("slo_attainment", "SLA adherence", "frac", "higher", "completed inference requests within their slo_ms / those with an SLO"),
        ("goodput_rps", "Goodput", "rps", "higher", "requests completed within SLO per second"),
        ("throughput_rps", "Throughput", "rps", "higher", "completed requests per second"),
    ):
        out.append(Measure(field, label, unit, cast(Direction, better), "metrics", _metric(field), what))
    for name, label, better, what in (
        ("CI", "Coherence index (CI)", "higher", "cross-layer coherence, 1 = fully coherent"),
        ("DI", "Delay index (DI)", "lower", "share of request time lost to non-productive delay"),
        ("WPI", "Wave propagation index (WPI)", "lower", "how far excursions spread and amplify"),
        ("HCL", "Hidden capacity loss (HCL)", "lower", "nominal minus effective utilization"),
    ):
        out.append(Measure(name, label, "index", cast(Direction, better), "indices", _index(name), what))
    return {m.name: m for m in out}


MEASURES: dict[str, Measure] = _build()


def values(report: Report) -> dict[str, float | None]:
    """Every measure of `report`, by name, in registry order."""
    return {name: m.value(report) for name, m in MEASURES.items()}


def relative_change(base: float | None, candidate: float | None) -> float | None:
    """(candidate - base) / |base|; None when either is missing or base is 0."""
    if base is None or candidate is None or base == 0:
        return None
    return (candidate - base) / abs(base)


def regression(measure: Measure, base: float | None, candidate: float | None) -> float | None:
    """How much worse the candidate is, as a relative change in the measure's bad direction.

    Positive = worse (p99 up, CI down), negative = better; None when not computable. For
    fractions and indices whose baseline is 0 the absolute change is used (a rate going from 0
    to 0.05 is a regression that a relative change cannot express).
    """
    if base is None or candidate is None or measure.better == "neither":
        return None
    sign = 1.0 if measure.better == "lower" else -1.0
    if base == 0:
        return sign * (candidate - base) if measure.unit in ("frac", "index") else None
    return sign * (candidate - base) / abs(base)
