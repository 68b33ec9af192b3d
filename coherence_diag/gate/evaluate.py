"""Evaluate a gate policy against a report (and optionally a baseline report). No I/O.

Every check gives one CheckResult: pass, fail or skipped, the measured value and the
threshold as text (for every output format alike), and a message that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coherence_diag.gate.policy import Check, FindingsCheck, MeasureCheck, Policy, RegressionCheck, check_kind
from coherence_diag.measures import MEASURES, Measure, regression
from coherence_diag.model import SEVERITIES, Finding, Report

Status = Literal["pass", "fail", "skipped"]
_RANK = {s: i for i, s in enumerate(("none", *SEVERITIES))}


@dataclass(frozen=True)
class FindingRef:
    """A finding that made a findings check fail."""

    rule: str
    severity: str
    kind: str
    domain: str
    score: float
    summary: str


@dataclass(frozen=True)
class RegressionItem:
    """One measure of a regression check: baseline, candidate and how much worse (positive = worse)."""

    measure: str
    unit: str
    base: float | None
    candidate: float | None
    change: float | None  # relative; absolute for a fraction or index whose baseline is 0
    absolute: bool  # True when `change` is an absolute difference (baseline 0)
    over_limit: bool


@dataclass(frozen=True)
class CheckResult:
    id: str
    kind: str  # "measure" | "findings" | "regression"
    status: Status
    measured: str  # the measured value(s), as text
    threshold: str  # the threshold, as text
    message: str  # why it passed, failed or was skipped
    description: str = ""
    measure: str | None = None  # measure checks: the measure, its value and bounds
    unit: str | None = None
    value: float | None = None
    min: float | None = None
    max: float | None = None
    findings: tuple[FindingRef, ...] = ()  # findings checks: the offending findings
    regressions: tuple[RegressionItem, ...] = ()  # regression checks: every measure compared
    not_evaluable: tuple[str, ...] = ()  # what could not be evaluated, and why


@dataclass(frozen=True)
class GateResult:
    policy: str  # policy name
    policy_source: str
    trace: str
    baseline: str | None
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skipped")}

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.status == "fail")


def evaluate(policy: Policy, report: Report, baseline: Report | None = None) -> GateResult:
    return GateResult(
        policy=policy.name,
        policy_source=policy.source,
        trace=report.trace.path,
        baseline=baseline.trace.path if baseline is not None else None,
        checks=tuple(_evaluate_check(check, report, baseline) for check in policy.checks),
    )


def _evaluate_check(check: Check, report: Report, baseline: Report | None) -> CheckResult:
    if isinstance(check, MeasureCheck):
        return _measure(check, report)
    if isinstance(check, FindingsCheck):
        return _findings(check, report)
    return _regression(check, report, baseline)


def format_value(value: float | None, unit: str) -> str:
    """A measure's value as text with its unit: '812.3 ms', '0.0213', '15.12 rps', 'n/a'."""
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "rps":
        return f"{value:.2f} rps"
    return f"{value:.4g}"


def _bound(value: float, unit: str) -> str:
    return f"{value:g} {unit}" if unit in ("ms", "rps") else f"{value:g}"


def _measure(check: MeasureCheck, report: Report) -> CheckResult:
    m = MEASURES[check.measure]
    value = m.value(report)
    parts = ([f">= {_bound(check.min, m.unit)}"] if check.min is not None else []) + (
        [f"<= {_bound(check.max, m.unit)}"] if check.max is not None else []
    )
    threshold = " and ".join(parts)
    common = dict(
        id=check.id, kind="measure", description=check.description, threshold=threshold,
        measure=m.name, unit=m.unit, value=value, min=check.min, max=check.max,
    )
    if value is None:
        why = missing_reason(report, m)
        status: Status = "skipped" if check.if_missing == "skip" else "fail"
        return CheckResult(status=status, measured="n/a", message=f"not evaluable: {why}", not_evaluable=(f"{m.name}: {why}",), **common)  # type: ignore[arg-type]
    shown = format_value(value, m.unit)
    if check.min is not None and value < check.min:
        status, message = "fail", f"{m.name} = {shown} is below the minimum {_bound(check.min, m.unit)}"
    elif check.max is not None and value > check.max:
        status, message = "fail", f"{m.name} = {shown} is above the maximum {_bound(check.max, m.unit)}"
    else:
        status, message = "pass", f"{m.name} = {shown}, within {threshold}"
    return CheckResult(status=status, measured=shown, message=message, **common)  # type: ignore[arg-type]


def missing_reason(report: Report, measure: Measure) -> str:
    """Why a measure is null for this report, from the report's evaluability."""
    key = measure.name if measure.group == "indices" else f"metrics.{measure.name.split('.')[0]}"
    ev = report.evaluability.get(key)
    if ev is not None and ev.missing:
        return f"{measure.name} needs column(s) {', '.join(ev.missing)}"
    if ev is not None and ev.reason:
        return f"{measure.name}: {ev.reason}"
    return f"the trace has no data for {measure.name}"


def _matches(check: FindingsCheck, finding: Finding) -> bool:
    return (
        (not check.rules or finding.rule in check.rules)
        and (not check.domains or bool({finding.domain, *finding.supporting_domains} & set(check.domains)))
        and (not check.kinds or finding.kind in check.kinds)
    )


def _findings(check: FindingsCheck, report: Report) -> CheckResult:
    limit = _RANK[check.max_severity]
    offending = tuple(
        FindingRef(f.rule, f.severity, f.kind, f.domain, f.score, f.summary)
        for f in report.findings
        if _matches(check, f) and _RANK[f.severity] > limit
    )
    scope = _scope(check)
    above = f" above {check.max_severity}" if check.max_severity != "none" else ""
    threshold = f"no finding{scope}{above}"
    unevaluable = tuple(
        f"{rule}: {_rule_reason(report, rule)}"
        for rule in check.rules
        if rule in report.evaluability and not report.evaluability[rule].evaluated
    )
    common = dict(id=check.id, kind="findings", description=check.description, threshold=threshold, findings=offending, not_evaluable=unevaluable)
    if offending:
        listed = "; ".join(f"{f.rule} ({f.severity}): {f.summary}" for f in offending)
        noun = "finding" if len(offending) == 1 else "findings"
        return CheckResult(status="fail", measured=f"{len(offending)} {noun}", message=f"{len(offending)} {noun}{scope}{above}: {listed}", **common)  # type: ignore[arg-type]
    if unevaluable:
        status: Status = "skipped" if check.if_missing == "skip" else "fail"
        return CheckResult(status=status, measured="n/a", message="not evaluable: " + "; ".join(unevaluable), **common)  # type: ignore[arg-type]
    return CheckResult(status="pass", measured="0 findings", message=f"no finding{scope}{above}", **common)  # type: ignore[arg-type]


def _scope(check: FindingsCheck) -> str:
    parts = [
        f"{label} {', '.join(values)}"
        for label, values in (("rules", check.rules), ("domains", check.domains), ("kinds", check.kinds))
        if values
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def _rule_reason(report: Report, rule: str) -> str:
    ev = report.evaluability[rule]
    if ev.missing:
        return f"needs column(s) {', '.join(ev.missing)}"
    return ev.reason or "not evaluable on this trace"


def change_text(item: RegressionItem) -> str:
    """How much worse, as text: '+12.3%', or '+0.05 absolute (baseline 0)'."""
    if item.change is None:
        return "n/a"
    if item.absolute:
        return f"{item.change:+.4g} absolute (baseline 0)"
    return f"{item.change:+.1%}"


def _regression(check: RegressionCheck, report: Report, baseline: Report | None) -> CheckResult:
    threshold = f"<= {check.max_relative:.1%} worse than baseline"
    common = dict(id=check.id, kind="regression", description=check.description, threshold=threshold)
    if baseline is None:
        status: Status = "skipped" if check.if_no_baseline == "skip" else "fail"
        return CheckResult(status=status, measured="n/a", message="no baseline given (--baseline): regression not checked", **common)  # type: ignore[arg-type]
    items = []
    for name in check.measures:
        m = MEASURES[name]
        base, candidate = m.value(baseline), m.value(report)
        change = regression(m, base, candidate)
        items.append(
            RegressionItem(
                measure=name, unit=m.unit, base=base, candidate=candidate, change=change,
                absolute=base == 0 and change is not None,
                over_limit=change is not None and change > check.max_relative,
            )
        )
    unevaluable = tuple(_regression_gap(i, report, baseline) for i in items if i.change is None)
    over = [i for i in items if i.over_limit]
    worst = max((i for i in items if i.change is not None), key=lambda i: i.change, default=None)  # type: ignore[arg-type,return-value]
    measured = f"{worst.measure} {change_text(worst)}" if worst else "n/a"
    common.update(regressions=tuple(items), not_evaluable=unevaluable, measured=measured)
    if over:
        listed = "; ".join(
            f"{i.measure} {format_value(i.base, i.unit)} -> {format_value(i.candidate, i.unit)} ({change_text(i)}, limit {check.max_relative:.1%})"
            for i in over
        )
        return CheckResult(status="fail", message=f"worse than baseline: {listed}", **common)  # type: ignore[arg-type]
    if unevaluable:
        if check.if_missing == "fail":
            return CheckResult(status="fail", message="not evaluable: " + "; ".join(unevaluable), **common)  # type: ignore[arg-type]
        if len(unevaluable) == len(items):
            return CheckResult(status="skipped", message="not evaluable: " + "; ".join(unevaluable), **common)  # type: ignore[arg-type]
    return CheckResult(status="pass", message=f"no measure worse than baseline by more than {check.max_relative:.1%}", **common)  # type: ignore[arg-type]


def _regression_gap(item: RegressionItem, report: Report, baseline: Report) -> str:
    m = MEASURES[item.measure]
    if item.candidate is None:
        return missing_reason(report, m)
    if item.base is None:
        return f"baseline: {missing_reason(baseline, m)}"
    return f"{item.measure}: baseline is 0, a relative change is undefined"
