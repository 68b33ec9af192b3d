"""Why a rule did or did not fire on one trace (`coherence-diag explain RULE --trace TRACE`).

`explain_rule` is a pure function over a rule and the feature values of one analysis: it runs the
rule through the engine (`engine.evaluate_rule`, so the verdict is the one `analyze` reports) and
lays out, with this trace's values, each clause of the condition (decided in three-valued logic
by `expr.decide`), each term of the score, each corroborating signal, the features that were
undefined and why, and the inputs the analysis estimated. Renderers show the result; nothing
here prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from coherence_diag.features import FeatureValues
from coherence_diag.model import SEVERITIES, AbsentEvidence, Evaluability
from coherence_diag.rules import engine
from coherence_diag.rules.expr import (
    Binary,
    Expression,
    Name,
    Node,
    Value,
    connective,
    decide,
    subexpression,
    terms,
)
from coherence_diag.rules.loader import Corroboration, Rule

Verdict = Literal["fired", "condition-not-held", "below-thresholds", "not-evaluable"]
Role = Literal["signature", "optional", "corroboration", "evidence"]
_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclass(frozen=True)
class Clause:
    """One clause of the condition (a comparison, `not ...`, `defined(...)`) with this trace's values."""

    source: str
    held: bool | None  # None: undecided (it reads an undefined value)
    features: dict[str, float | None]  # the features it reads, with their values
    left: str | None = None  # a computed left side of a comparison (e.g. `max(a, b)`) ...
    left_value: float | None = None  # ... and its value


@dataclass(frozen=True)
class ClauseGroup:
    """An `and` (all of) or `or` (any of) of clauses and groups, decided in three-valued logic."""

    op: Literal["and", "or"]
    held: bool | None
    parts: tuple[ClauseGroup | Clause, ...]


@dataclass(frozen=True)
class ScoreTerm:
    """One top-level term of the score: `op` says how it combines ('+', '-', '*', '/', or '' for
    an argument of a function such as max_of)."""

    op: str
    source: str
    value: float | None
    features: dict[str, float | None]


@dataclass(frozen=True)
class SignalCheck:
    """One corroborating signal: measured (all inputs defined)? held? its weight."""

    when: str
    weight: float
    says: str
    measured: bool
    held: bool | None  # None when not measured
    features: dict[str, float | None]


@dataclass(frozen=True)
class UndefinedFeature:
    """A feature the rule reads that this trace leaves undefined, and what that costs the rule."""

    name: str
    role: Role  # signature (needed), optional (null-aware input), corroboration, evidence (quoted only)
    missing: tuple[str, ...]  # trace columns that would give it
    reason: str | None  # why it is undefined although its columns are present


@dataclass(frozen=True)
class RuleExplanation:
    rule: str
    title: str
    physics: str
    verdict: Verdict
    verdict_text: str  # the verdict in one sentence
    evaluability: Evaluability
    condition: str  # source text
    condition_held: bool | None
    clauses: ClauseGroup | Clause  # the condition's and/or tree down to its clauses
    score: str  # source text
    score_combine: str | None  # how the terms combine: sum, product, a function name; None: one term
    score_terms: tuple[ScoreTerm, ...]
    signature_score: float | None  # the score, clipped to [0, 1], before corroboration (condition held)
    final_score: float | None  # with the weight of the corroborating signals that held
    severity: str | None
    severity_thresholds: dict[str, float]
    confidence: float | None  # of the finding: the measured share of corroborating weight
    corroboration: tuple[SignalCheck, ...]
    undefined: tuple[UndefinedFeature, ...]
    estimated_inputs: tuple[str, ...]  # "column: how" for inputs estimated from weaker telemetry
    summary: str | None  # the finding's summary when it fired

    @property
    def clause_list(self) -> tuple[Clause, ...]:
        """The clauses in source order, without their grouping."""

        def leaves(part: ClauseGroup | Clause) -> tuple[Clause, ...]:
            return (part,) if isinstance(part, Clause) else tuple(c for p in part.parts for c in leaves(p))

        return leaves(self.clauses)


def explain_rule(
    rule: Rule, features: FeatureValues, columns: set[str] | frozenset[str], derived: Mapping[str, str] | None = None
) -> RuleExplanation:
    """Explain what `rule` made of the feature values of one trace (see the module docstring)."""
    values = features.values
    derived = dict(derived or {})
    outcome = engine.evaluate_rule(rule, features, set(columns), derived)
    finding = outcome.finding
    split = terms(rule.score.tree)
    score_parts = split[1] if split else (("", rule.score.tree),)
    severity = finding.severity if finding else None
    verdict, text = _verdict(outcome, severity)
    return RuleExplanation(
        rule=rule.id,
        title=rule.title,
        physics=rule.physics,
        verdict=verdict,
        verdict_text=text,
        evaluability=outcome.evaluability,
        condition=" ".join(rule.condition.source.split()),
        condition_held=decide(rule.condition, values),
        clauses=_clauses(rule.condition.tree, values),
        score=" ".join(rule.score.source.split()),
        score_combine=split[0] if split else None,
        score_terms=tuple(_term(op, node, values) for op, node in score_parts),
        signature_score=outcome.signature_score,
        final_score=finding.score if finding else outcome.signature_score,
        severity=severity,
        severity_thresholds={s: rule.severity[s] for s in SEVERITIES if s in rule.severity},
        confidence=finding.confidence if finding else None,
        corroboration=tuple(_signal(c, values) for c in rule.corroboration),
        undefined=_undefined(rule, features),
        estimated_inputs=finding.estimated_inputs if finding else engine.estimated_inputs(rule.features, derived),
        summary=finding.summary if finding else None,
    )


def _verdict(outcome: engine.RuleOutcome, severity: str | None) -> tuple[Verdict, str]:
    e = outcome.evaluability
    if not e.evaluated:
        needs = f" (needs columns {', '.join(e.missing)})" if e.missing else ""
        return "not-evaluable", f"not evaluable: {e.reason}{needs}"
    if outcome.finding is not None:
        f = outcome.finding
        return "fired", f"fired at severity {severity} (score {f.score:.2f}, confidence {f.confidence:.2f})"
    if outcome.condition_held:
        return "below-thresholds", f"the condition held but the score {outcome.signature_score:.2f} is below every severity threshold"
    return "condition-not-held", "did not fire: the condition did not hold"


def _features(expr: Expression, values: Mapping[str, Value]) -> dict[str, float | None]:
    return {n: _number(values.get(n)) for n in sorted(expr.names)}


def _number(value: Value) -> float | None:
    return None if value is None else float(value)


def _clauses(node: Node, values: Mapping[str, Value]) -> ClauseGroup | Clause:
    split = connective(node)
    if split is not None:
        op, operands = split
        return ClauseGroup(op, decide(subexpression(node), values), tuple(_clauses(o, values) for o in operands))  # type: ignore[arg-type]
    clause = subexpression(node)
    left = None
    if isinstance(node, Binary) and node.op in _COMPARISONS and not isinstance(node.left, Name):
        left = subexpression(node.left)
    return Clause(
        source=clause.source,
        held=decide(clause, values),
        features=_features(clause, values),
        left=left.source if left is not None and left.names else None,
        left_value=_number(left.evaluate(values)) if left is not None and left.names else None,
    )


def _term(op: str, node: Node, values: Mapping[str, Value]) -> ScoreTerm:
    term = subexpression(node)
    return ScoreTerm(op, term.source, _number(term.evaluate(values)), _features(term, values))


def _signal(item: Corroboration, values: Mapping[str, Value]) -> SignalCheck:
    undefined, held = engine.check_signal(item, values)
    return SignalCheck(
        when=" ".join(item.when.source.split()),
        weight=item.weight,
        says=item.says,
        measured=not undefined,
        held=held,
        features=_features(item.when, values),
    )


def _undefined(rule: Rule, features: FeatureValues) -> tuple[UndefinedFeature, ...]:
    signature = rule.signature_names
    optional = rule.condition.names | rule.score.names
    signals = frozenset(n for c in rule.corroboration for n in c.when.names)

    def role(name: str) -> Role:
        if name in signature:
            return "signature"
        if name in optional:
            return "optional"
        return "corroboration" if name in signals else "evidence"

    out = []
    for name in sorted(rule.features):
        if features.values.get(name) is None:
            absent: AbsentEvidence = engine.absent(name, features)
            out.append(UndefinedFeature(name, role(name), absent.missing, absent.reason))
    return tuple(out)
