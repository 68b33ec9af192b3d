"""Evaluate rules over computed features: findings, ranked, and what could not be evaluated."""

from __future__ import annotations

from coherence_diag.features import FeatureValues
from coherence_diag.model import SEVERITIES, Evaluability, Finding
from coherence_diag.rules.loader import Rule, render_template

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def severity_for(rule: Rule, score: float) -> str | None:
    """The highest severity whose threshold the score reaches (None below every threshold)."""
    reached = [s for s in SEVERITIES if s in rule.severity and score >= rule.severity[s]]
    return reached[-1] if reached else None


def evaluate(rules: list[Rule], features: FeatureValues, columns: set[str]) -> tuple[list[Finding], dict[str, Evaluability]]:
    findings: list[Finding] = []
    evaluability: dict[str, Evaluability] = {}
    for rule in rules:
        deciding = rule.condition.names | rule.score.names
        missing_features = sorted(n for n in deciding if n in features.missing)
        missing_cols = sorted(
            {c for n in missing_features for c in features.missing[n]} | {c for c in rule.requires if c not in columns}
        )
        if missing_features or missing_cols:
            reason = "needs " + ", ".join(missing_features) if missing_features else "needs more columns"
            evaluability[rule.id] = Evaluability(False, tuple(missing_cols), reason)
            continue
        values = features.values
        if any(values.get(n) is None for n in rule.condition.names):
            undefined = sorted(n for n in rule.condition.names if values.get(n) is None)
            stated = sorted({features.reasons[n] for n in undefined if n in features.reasons})
            why = "; ".join(stated) if stated else "the trace has too little data for " + ", ".join(undefined)
            evaluability[rule.id] = Evaluability(False, (), why)
            continue
        evaluability[rule.id] = Evaluability(True)
        if rule.condition.evaluate(values) is not True:
            continue
        raw = rule.score.evaluate(values)
        score = min(1.0, max(0.0, float(raw))) if isinstance(raw, (int, float)) else 0.0
        severity = severity_for(rule, score)
        if severity is None:
            continue
        evidence: dict[str, object] = {}
        for name in rule.evidence:
            evidence[name] = values.get(name)
            evidence.update(features.details.get(name, {}))
        findings.append(
            Finding(
                rule=rule.id,
                kind=rule.kind,  # type: ignore[arg-type]
                mode=rule.mode,
                domain=rule.domain,
                supporting_domains=rule.supporting_domains,
                severity=severity,  # type: ignore[arg-type]
                score=score,
                summary=render_template(rule.summary, dict(values)),
                evidence=evidence,
            )
        )
    findings.sort(key=lambda f: (-_RANK[f.severity], -f.score, f.rule))
    return findings, evaluability
