"""Evaluate a gate policy against a report (and optionally a baseline report). No I/O.

Every check gives one CheckResult: pass, fail or skipped, the measured value and the
threshold as text (for every output format alike), and a message that says why. A check the
trace cannot evaluate (a null measure, an unevaluable rule, no baseline) has `evaluated` false
and a message that says so (`not evaluable (needs column slo_ms)`), never one that reads like a
value outside a bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from coherence_diag import units
from coherence_diag.gate.policy import Check, FindingsCheck, MeasureCheck, Policy, RegressionCheck
from coherence_diag.measures import MEASURES, Measure, regression
from coherence_diag.model import (
    SEVERITIES,
    CheckResult,
    Evaluability,
    Finding,
    FindingRef,
    GateResult,
    RegressionItem,
    Report,
    Status,
)

_RANK = {s: i for i, s in enumerate(("none", *SEVERITIES))}


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


def _measure(check: MeasureCheck, report: Report) -> CheckResult:
    m = MEASURES[check.measure]
    raw = m.value(report)
    value = raw if raw is not None and math.isfinite(raw) else None  # NaN compares false: never let it pass
    parts = ([f">= {units.bound(check.min, m.unit)}"] if check.min is not None else []) + (
        [f"<= {units.bound(check.max, m.unit)}"] if check.max is not None else []
    )
    threshold = " and ".join(parts)
    base = CheckResult(
        id=check.id, kind="measure", status="fail", measured="n/a", threshold=threshold, message="",
        description=check.description, measure=m.name, unit=m.unit, value=value, min=check.min, max=check.max,
    )
    if value is None:
        missing, why = measure_gap(report, m) if raw is None else ((), f"{m.name} is not a finite number")
        return replace(
            base, status=_if_missing(check.if_missing), message=not_evaluable_message((why,)),
            not_evaluable=(f"{m.name}: {why}",), evaluated=False, missing_columns=missing,
        )
    shown = units.exact(value, m.unit)
    if check.min is not None and value < check.min:
        return replace(base, measured=shown, message=f"{m.name} = {shown} is below the minimum {units.bound(check.min, m.unit)}")
    if check.max is not None and value > check.max:
        return replace(base, measured=shown, message=f"{m.name} = {shown} is above the maximum {units.bound(check.max, m.unit)}")
    return replace(base, status="pass", measured=shown, message=f"{m.name} = {shown}, within {threshold}")


def _if_missing(policy: str) -> Status:
    return "skipped" if policy == "skip" else "fail"


def not_evaluable_message(gaps: tuple[str, ...]) -> str:
    """'not evaluable (needs column slo_ms)': the message of a check the trace cannot evaluate."""
    return f"not evaluable ({'; '.join(gaps)})"


def measure_gap(report: Report, measure: Measure) -> tuple[tuple[str, ...], str]:
    """Why a measure is null for this report, from the report's evaluability: the missing
    columns, and the reason as a phrase ('needs column slo_ms', 'needs wait series for ...')."""
    key = measure.name if measure.group == "indices" else f"metrics.{measure.name.split('.')[0]}"
    return _gap(report.evaluability.get(key), f"the trace has no data for {measure.name}")


def _gap(ev: Evaluability | None, fallback: str) -> tuple[tuple[str, ...], str]:
    if ev is not None and ev.missing:
        noun = "column" if len(ev.missing) == 1 else "columns"
        return ev.missing, f"needs {noun} {', '.join(ev.missing)}"
    return (), (ev.reason if ev is not None else None) or fallback


def _columns(gaps: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(sorted({c for missing in gaps for c in missing}))


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
    gaps = {
        rule: _gap(report.evaluability[rule], "the trace has no data for it")
        for rule in check.rules
        if rule in report.evaluability and not report.evaluability[rule].evaluated
    }
    unevaluable = tuple(f"{rule}: {why}" for rule, (_, why) in gaps.items())
    base = CheckResult(
        id=check.id, kind="findings", status="fail", measured="n/a", threshold=f"no finding{scope}{above}", message="",
        description=check.description, findings=offending, not_evaluable=unevaluable,
        missing_columns=_columns(missing for missing, _ in gaps.values()),
    )
    if offending:
        noun = "finding" if len(offending) == 1 else "findings"
        listed = "; ".join(f"{f.rule} ({f.severity}): {f.summary}" for f in offending)
        return replace(base, measured=f"{len(offending)} {noun}", message=f"{len(offending)} {noun}{scope}{above}: {listed}")
    if unevaluable:
        return replace(
            base, status=_if_missing(check.if_missing), message=not_evaluable_message(unevaluable), evaluated=False
        )
    return replace(base, status="pass", measured="0 findings", message=f"no finding{scope}{above}")


def _scope(check: FindingsCheck) -> str:
    parts = [
        f"{label} {', '.join(values)}"
        for label, values in (("rules", check.rules), ("domains", check.domains), ("kinds", check.kinds))
        if values
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def change_text(item: RegressionItem) -> str:
    """How much worse, as text: '+12.3%', or '+0.05 absolute (baseline 0)'."""
    return units.regression_change(item.change, item.absolute)


def _regression(check: RegressionCheck, report: Report, baseline: Report | None) -> CheckResult:
    base = CheckResult(
        id=check.id, kind="regression", status="fail", measured="n/a",
        threshold=f"<= {units.limit_percent(check.max_relative)} worse than baseline", message="", description=check.description,
    )
    if baseline is None:
        return replace(
            base, status=_if_missing(check.if_no_baseline), message="no baseline given (--baseline): regression not checked",
            evaluated=False,
        )
    items = tuple(_compare(MEASURES[name], baseline, report, check.max_relative) for name in check.measures)
    gaps = [_regression_gap(i, report, baseline) for i in items if i.change is None]
    unevaluable = tuple(why for _, why in gaps)
    worst = max((i for i in items if i.change is not None), key=lambda i: i.change or 0.0, default=None)
    base = replace(
        base, regressions=items, not_evaluable=unevaluable, missing_columns=_columns(missing for missing, _ in gaps),
        measured=f"{worst.measure} {change_text(worst)}" if worst else "n/a",
    )
    over = [i for i in items if i.over_limit]
    if over:
        listed = "; ".join(
            f"{i.measure} {units.exact(i.base, i.unit)} -> {units.exact(i.candidate, i.unit)} "
            f"({change_text(i)}, limit {units.limit_percent(check.max_relative)})"
            for i in over
        )
        return replace(base, message=f"worse than baseline: {listed}")
    if unevaluable and check.if_missing == "fail":
        return replace(base, message=not_evaluable_message(unevaluable), evaluated=False)
    if unevaluable and len(unevaluable) == len(items):
        return replace(base, status="skipped", message=not_evaluable_message(unevaluable), evaluated=False)
    return replace(base, status="pass", message=f"no measure worse than baseline by more than {units.limit_percent(check.max_relative)}")


def _compare(m: Measure, baseline: Report, report: Report, limit: float) -> RegressionItem:
    base, candidate = m.value(baseline), m.value(report)
    change = regression(m, base, candidate)
    if change is not None and not math.isfinite(change):
        change = None
    return RegressionItem(
        measure=m.name, unit=m.unit, base=base, candidate=candidate, change=change,
        absolute=base == 0 and change is not None, over_limit=change is not None and change > limit,
    )


def _regression_gap(item: RegressionItem, report: Report, baseline: Report) -> tuple[tuple[str, ...], str]:
    """The missing columns and the reason why one measure of a regression check has no change."""
    m = MEASURES[item.measure]
    if item.candidate is None:
        missing, why = measure_gap(report, m)
        return missing, f"{item.measure}: {why}"
    if item.base is None:
        missing, why = measure_gap(baseline, m)
        return missing, f"baseline {item.measure}: {why}"
    if item.base == 0:
        return (), f"{item.measure}: baseline is 0, a relative change is undefined"
    return (), f"{item.measure}: the change is not a finite number"
