"""Evaluate rules over computed features: findings, ranked, and what could not be evaluated.

A rule's *signature* is its condition, decided in three-valued logic (`expr.decide`): the
features it needs defined to hold must be computable from the trace's columns, and a condition
that depends on an undefined value is not evaluable (with the columns or the reason). Its
*corroborating* signals are optional: measured and holding, they raise the score; unmeasurable,
the finding is still made and lists them as absent evidence, with a confidence below 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from coherence_diag.features import FEATURES, FeatureValues
from coherence_diag.model import SEVERITIES, AbsentEvidence, Evaluability, Evidence, EvidenceItem, Finding
from coherence_diag.rules.expr import Value, decide, truth
from coherence_diag.rules.loader import Corroboration, Rule, render_template

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def severity_for(rule: Rule, score: float) -> str | None:
    """The highest severity whose threshold the score reaches (None below every threshold)."""
    reached = [s for s in SEVERITIES if s in rule.severity and score >= rule.severity[s]]
    return reached[-1] if reached else None


def evaluate(
    rules: list[Rule], features: FeatureValues, columns: set[str], derived: dict[str, str] | None = None
) -> tuple[list[Finding], dict[str, Evaluability]]:
    """`derived`: trace columns the analysis estimated from weaker telemetry -> how (findings
    whose features read them say so)."""
    findings: list[Finding] = []
    evaluability: dict[str, Evaluability] = {}
    for rule in rules:
        outcome = evaluate_rule(rule, features, columns, derived or {})
        evaluability[rule.id] = outcome.evaluability
        if outcome.finding is not None:
            findings.append(outcome.finding)
    findings = defer_to_causes(findings, {r.id: r.defers_to for r in rules if r.defers_to})
    findings.sort(key=lambda f: (-_RANK[f.severity], -f.score, f.rule))
    return findings, evaluability


def defer_to_causes(findings: list[Finding], defers: Mapping[str, tuple[str, ...]]) -> list[Finding]:
    """A symptom finding whose more specific cause was also found (>= medium) is kept at low
    severity, its evidence naming the cause: the cause, not the symptom, is the diagnosis."""
    strong = {f.rule for f in findings if _RANK[f.severity] >= _RANK["medium"]}
    out = []
    for f in findings:
        causes = sorted(c for c in defers.get(f.rule, ()) if c in strong)
        if causes and _RANK[f.severity] > _RANK["low"]:
            f = replace(f, severity="low", evidence=f.evidence.with_detail("explained_by", causes))
        out.append(f)
    return out


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule made of one trace: whether it could be evaluated, whether its condition held
    (None: not decided), its score before corroboration, and the finding if any."""

    evaluability: Evaluability
    finding: Finding | None = None
    condition_held: bool | None = None
    signature_score: float | None = None


def absent(name: str, features: FeatureValues) -> AbsentEvidence:
    """Why the feature `name` is undefined: the columns that would give it, or the reason."""
    reading = features.reading(name)
    return AbsentEvidence(name, reading.missing, reading.reason)


def check_signal(item: Corroboration, values: Mapping[str, Value]) -> tuple[tuple[str, ...], bool | None]:
    """(its undefined inputs, whether it holds): a corroborating signal is measured when all its
    inputs are defined; `held` is None when it is not."""
    undefined = tuple(sorted(n for n in item.when.names if values.get(n) is None))
    return undefined, (None if undefined else truth(item.when.evaluate(values)))


def estimated_inputs(names: Iterable[str], derived: Mapping[str, str]) -> tuple[str, ...]:
    """`column: how` of each trace column that the features `names` read and the analysis estimated."""
    return tuple(sorted({
        f"{col}: {how}" for n in names if n in FEATURES for col in FEATURES[n].requires if (how := derived.get(col))
    }))


def finding_evidence(rule: Rule, features: FeatureValues) -> Evidence:
    """The evidence a rule lists: each feature's value with its declared unit, followed by the
    details its feature group hangs on it (pools, devices, windows)."""
    items: list[EvidenceItem] = []
    for name in rule.evidence:
        unit = FEATURES[name].unit if name in FEATURES else None
        items.append(EvidenceItem(name, features.values.get(name), unit, "value"))
        items.extend(EvidenceItem(key, value) for key, value in features.details.get(name, {}).items())
    return Evidence(items)


def evaluate_rule(rule: Rule, features: FeatureValues, columns: set[str], derived: dict[str, str]) -> RuleOutcome:
    values = features.values
    signature = rule.signature_names
    missing_features = sorted(n for n in signature if n in features.missing)
    missing_cols = sorted(
        {c for n in missing_features for c in features.missing[n]} | {c for c in rule.requires if c not in columns}
    )
    if missing_features or missing_cols:
        reason = "needs " + ", ".join(missing_features) if missing_features else "needs more columns"
        return RuleOutcome(Evaluability(False, tuple(missing_cols), reason))
    held_now = decide(rule.condition, values)
    if held_now is None:  # the condition depends on values this trace does not define
        undefined = sorted(n for n in rule.condition.names if values.get(n) is None)
        absent_cols = sorted({c for n in undefined for c in features.missing.get(n, ())})
        stated = sorted({features.reasons[n] for n in undefined if n in features.reasons})
        why = "; ".join(stated) if stated else "the trace has too little data for " + ", ".join(undefined)
        return RuleOutcome(Evaluability(False, tuple(absent_cols), why))
    if not held_now:
        return RuleOutcome(Evaluability(True), condition_held=False)
    raw = rule.score.evaluate(values)
    if raw is None:  # the loader rejects scores that can be undefined here; kept as a guard
        return RuleOutcome(Evaluability(False, (), "the score is undefined for this trace"), condition_held=True)
    base = min(1.0, max(0.0, float(raw)))
    score = base
    held: list[str] = []
    missing_evidence: dict[str, AbsentEvidence] = {}
    total_weight = sum(c.weight for c in rule.corroboration)
    measured_weight = 0.0
    for item in rule.corroboration:
        undefined_inputs, holds = check_signal(item, values)
        for n in undefined_inputs:
            missing_evidence.setdefault(n, absent(n, features))
        if undefined_inputs:
            continue
        measured_weight += item.weight
        if holds:
            score = min(1.0, score + item.weight)
            held.append(item.says)
    for n in sorted((rule.condition.names | rule.score.names) - signature):
        if values.get(n) is None:  # optional inputs of null-aware functions
            missing_evidence.setdefault(n, absent(n, features))
    severity = severity_for(rule, score)
    if severity is None:
        return RuleOutcome(Evaluability(True), condition_held=True, signature_score=base)
    finding = Finding(
        rule=rule.id,
        kind=rule.kind,  # type: ignore[arg-type]
        mode=rule.mode,
        domain=rule.domain,
        supporting_domains=rule.supporting_domains,
        severity=severity,  # type: ignore[arg-type]
        score=score,
        summary=render_template(rule.summary, dict(values)),
        evidence=finding_evidence(rule, features),
        confidence=measured_weight / total_weight if total_weight else 1.0,
        corroborated_by=tuple(held),
        absent_evidence=tuple(missing_evidence[n] for n in sorted(missing_evidence)),
        estimated_inputs=estimated_inputs(rule.features - frozenset(missing_evidence), derived),
    )
    return RuleOutcome(Evaluability(True), finding, condition_held=True, signature_score=base)
