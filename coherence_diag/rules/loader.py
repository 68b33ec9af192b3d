"""Load and validate rule files (rules/*.yaml). Rule files are data: nothing in them is run.

Each file holds one rule (a mapping) or a list of rules. Every problem in every file is
collected and reported together as one RuleError (exit 2) naming file, rule and problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from coherence_diag.errors import InputError, RuleError
from coherence_diag.features import FEATURES
from coherence_diag.model import SEVERITIES
from coherence_diag.rules.expr import ExprError, Expression, guarded_names, parse, strict_names
from coherence_diag.taxonomy import DOMAINS, KINDS, MODES

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FORMAT_SPEC = re.compile(r"^[<>^=+ 0-9,._%-]*[bdeEfFgGnoxX%]?$")
_FIELDS = {
    "id": True,
    "kind": True,
    "mode": False,
    "domain": True,
    "supporting_domains": False,
    "title": True,
    "physics": False,
    "requires": False,
    "condition": True,
    "score": True,
    "corroboration": False,
    "defers_to": False,
    "severity": True,
    "summary": True,
    "evidence": True,
    "explanation": True,
    "next_checks": True,
}


@dataclass(frozen=True)
class Corroboration:
    """An optional signal that supports a finding: when its inputs are defined and `when` holds,
    `weight` is added to the score; when its inputs are undefined the finding is made anyway and
    says the signal was absent (its confidence drops by the weight's share)."""

    when: Expression
    weight: float
    says: str  # what it means when it holds, for the finding's evidence


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    mode: str | None
    domain: str
    supporting_domains: tuple[str, ...]
    title: str
    requires: tuple[str, ...]  # extra trace columns beyond those of the features it reads
    condition: Expression
    score: Expression
    severity: dict[str, float]  # severity -> lowest score at which it applies
    summary: str
    evidence: tuple[str, ...]
    explanation: str
    next_checks: tuple[str, ...]
    source: str  # file it came from
    corroboration: tuple[Corroboration, ...] = ()
    physics: str = ""  # the condition's physical reasoning, in prose (shipped rules all have one)
    # A symptom rule names the more specific causes that explain it: when one of them is found at
    # medium severity or more on the same trace, this rule's finding is kept at low, explained by it.
    defers_to: tuple[str, ...] = ()

    @property
    def features(self) -> frozenset[str]:
        return (
            self.condition.names
            | self.score.names
            | frozenset(n for c in self.corroboration for n in c.when.names)
            | frozenset(self.evidence)
            | frozenset(template_names(self.summary))
        )

    @property
    def signature_names(self) -> frozenset[str]:
        """Features the rule cannot be evaluated without: those its condition needs defined to hold
        (the score reads no others, the loader checks that). Inputs of null-aware functions, of
        `or` branches and of corroborating signals are optional."""
        return frozenset(guarded_names(self.condition.tree) | strict_names(self.score.tree))


def builtin_rules_dir() -> Path:
    return Path(str(resources.files("coherence_diag.builtin_rules")))


def load_rules(extra_dirs: list[Path] | None = None) -> list[Rule]:
    """The shipped rules plus those of `extra_dirs` (a later rule with the same id is an error)."""
    dirs = [builtin_rules_dir(), *(extra_dirs or [])]
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for directory in dirs:
        if not directory.is_dir():
            problems.append(f"{directory}: not a directory of rule files")
            continue
        files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files and directory != dirs[0]:
            problems.append(f"{directory}: contains no .yaml rule files")
        for path in files:
            for rule in _load_file(path, problems):
                if rule.id in seen:
                    problems.append(f"{path}: rule {rule.id!r}: id already defined in {seen[rule.id]}")
                    continue
                seen[rule.id] = str(path)
                rules.append(rule)
    for rule in rules:
        for other in rule.defers_to:
            if other not in seen or other == rule.id:
                problems.append(f"{rule.source}: rule {rule.id!r}: defers_to names {other!r}, which is not another loaded rule")
    if problems:
        if len(problems) == 1:
            raise RuleError(f"invalid rule file: {problems[0]}")
        body = "\n".join(f"  - {p}" for p in problems)
        raise RuleError(f"invalid rule files ({len(problems)} problems):\n{body}")
    return sorted(rules, key=lambda r: r.id)


def find_rule(rule_id: str, rules: list[Rule]) -> Rule:
    """The rule of that id among `rules`; an InputError naming the known ones otherwise."""
    for rule in rules:
        if rule.id == rule_id:
            return rule
    raise InputError(f"unknown rule {rule_id!r}; known rules: {', '.join(r.id for r in rules)}")


# libyaml's safe loader when PyYAML has it: the same documents, parsed several times faster
# (the shipped rules load on every analysis).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_file(path: Path, problems: list[str]) -> list[Rule]:
    try:
        data = yaml.load(path.read_text("utf-8"), Loader=_SAFE_LOADER)
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
        return []
    except yaml.YAMLError as exc:
        problems.append(f"{path}: not valid YAML ({str(exc).splitlines()[0]})")
        return []
    items = data if isinstance(data, list) else [data]
    rules = []
    for i, item in enumerate(items):
        where = f"{path}: rule #{i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping of rule fields, got {type(item).__name__}")
            continue
        if isinstance(item.get("id"), str):
            where = f"{path}: rule {item['id']!r}"
        rule = _build(item, where, str(path), problems)
        if rule is not None:
            rules.append(rule)
    return rules


def _build(item: dict[str, Any], where: str, source: str, problems: list[str]) -> Rule | None:
    before = len(problems)
    for key in item:
        if key not in _FIELDS:
            problems.append(f"{where}: unknown field {key!r} (allowed: {', '.join(_FIELDS)})")
    for key, required in _FIELDS.items():
        if required and key not in item:
            problems.append(f"{where}: missing required field {key!r}")
    if len(problems) > before:
        return None

    def text(key: str) -> str:
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: {key!r} must be non-empty text")
            return ""
        return value.strip()

    def text_list(key: str) -> tuple[str, ...]:
        value = item.get(key, [])
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}: {key!r} must be a list of text")
            return ()
        return tuple(value)

    rule_id = text("id")
    if rule_id and not _ID.match(rule_id):
        problems.append(f"{where}: id {rule_id!r} must be lower-case letters, digits and '-'")
    kind = item.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: kind must be {' or '.join(repr(k) for k in KINDS)}, got {kind!r}")
    mode = item.get("mode")
    if mode is not None and mode not in MODES:
        problems.append(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
    if kind == "mode" and mode is None:
        problems.append(f"{where}: a rule of kind 'mode' must name its mode")
    domain = item.get("domain")
    if domain not in DOMAINS:
        problems.append(f"{where}: domain {domain!r} is not one of {', '.join(DOMAINS)}")
    supporting = text_list("supporting_domains")
    for d in supporting:
        if d not in DOMAINS:
            problems.append(f"{where}: supporting domain {d!r} is not one of {', '.join(DOMAINS)}")
    if kind == "mode" and mode in MODES and rule_id == mode:
        want_domain, want_support = MODES[mode]
        if domain != want_domain or tuple(supporting) != want_support:
            problems.append(
                f"{where}: the rule of mode {mode!r} must map to domain {want_domain} "
                f"with supporting {list(want_support)} (report-contract.md)"
            )

    condition = _expr(item.get("condition"), "condition", where, problems)
    score = _expr(item.get("score"), "score", where, problems)
    severity = _severity(item.get("severity"), where, problems)
    summary = text("summary")
    evidence = text_list("evidence")
    requires = text_list("requires")
    corroboration = _corroboration(item.get("corroboration"), where, problems)
    names = set(evidence) | set(template_names(summary, where, problems))
    for expr in (condition, score, *(c.when for c in corroboration)):
        if expr is not None:
            names |= expr.names
    if condition is not None and score is not None:
        unguarded = strict_names(score.tree) - guarded_names(condition.tree)
        if unguarded:
            problems.append(
                f"{where}: score reads {', '.join(sorted(unguarded))} outside a null-aware function "
                "(coalesce, mean_of, product_of, max_of, min_of) although the condition can hold while "
                "it is undefined: the score would silently become undefined"
            )
    for name in sorted(names):
        if name not in FEATURES:
            problems.append(f"{where}: unknown feature {name!r} (see `coherence-diag explain features`)")
    explanation = text("explanation")
    next_checks = text_list("next_checks")
    if not next_checks:
        problems.append(f"{where}: 'next_checks' must list at least one thing an operator should check")
    title = text("title")
    if len(problems) > before or not isinstance(kind, str) or not isinstance(domain, str):
        return None
    return Rule(
        id=rule_id,
        kind=kind,
        mode=mode,
        domain=domain,
        supporting_domains=tuple(supporting),
        title=title,
        requires=requires,
        condition=condition,  # type: ignore[arg-type]
        score=score,  # type: ignore[arg-type]
        severity=severity,
        summary=summary,
        evidence=evidence,
        explanation=explanation,
        next_checks=next_checks,
        source=source,
        corroboration=corroboration,
        physics=text("physics") if "physics" in item else "",
        defers_to=text_list("defers_to"),
    )


def _corroboration(value: Any, where: str, problems: list[str]) -> tuple[Corroboration, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{where}: 'corroboration' must be a list of {{when, weight, says}} entries")
        return ()
    out = []
    for i, entry in enumerate(value):
        at = f"{where}: corroboration #{i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"when", "weight", "says"}:
            problems.append(f"{at}: expected exactly the fields when, weight, says")
            continue
        when = _expr(entry["when"], "when", at, problems)
        weight = entry["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
            problems.append(f"{at}: weight must be a number in (0, 1], got {weight!r}")
            continue
        if not isinstance(entry["says"], str) or not entry["says"].strip():
            problems.append(f"{at}: 'says' must be non-empty text")
            continue
        if when is not None:
            out.append(Corroboration(when, float(weight), entry["says"].strip()))
    return tuple(out)


def _expr(value: Any, key: str, where: str, problems: list[str]) -> Expression | None:
    if not isinstance(value, str):
        problems.append(f"{where}: {key!r} must be an expression written as text")
        return None
    try:
        return parse(value)
    except ExprError as exc:
        problems.append(f"{where}: {key}: {exc}")
        return None


def _severity(value: Any, where: str, problems: list[str]) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        problems.append(f"{where}: 'severity' must map severities ({', '.join(SEVERITIES)}) to score thresholds")
        return {}
    out: dict[str, float] = {}
    for key, threshold in value.items():
        if key not in SEVERITIES:
            problems.append(f"{where}: severity {key!r} is not one of {', '.join(SEVERITIES)}")
            continue
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            problems.append(f"{where}: severity threshold for {key!r} must be a number in [0, 1], got {threshold!r}")
            continue
        out[key] = float(threshold)
    ordered = [out[s] for s in SEVERITIES if s in out]
    if ordered != sorted(ordered):
        problems.append(f"{where}: severity thresholds must rise from low to critical")
    return out


def template_names(template: str, where: str = "", problems: list[str] | None = None) -> list[str]:
    """Feature names used by `{name}` or `{name:spec}` placeholders, checking their form."""
    names = []
    for body in _PLACEHOLDER.findall(template):
        name, _, spec = body.partition(":")
        if not re.match(r"^[a-z_][a-z0-9_]*$", name) or not _FORMAT_SPEC.match(spec):
            if problems is not None:
                problems.append(f"{where}: summary placeholder {{{body}}} must be {{feature}} or {{feature:format}}")
            continue
        names.append(name)
    return names


_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def render_template(template: str, values: dict[str, object]) -> str:
    """Fill `{name:spec}` placeholders with formatted values (no str.format on rule text).

    A sentence whose placeholders are not all defined is left out (a finding made on partial
    evidence lists the absent signals apart); only when no sentence is complete does the text
    keep its sentences with "n/a" in place of the undefined values."""
    sentences = _SENTENCE_END.split(template.strip())
    complete = [t for t in sentences if all(values.get(n) is not None for n in template_names(t))]
    return " ".join(_fill(t, values) for t in (complete or sentences))


def _fill(template: str, values: dict[str, object]) -> str:
    def fill(match: re.Match[str]) -> str:
        name, _, spec = match.group(1).partition(":")
        value = values.get(name)
        if value is None:
            return "n/a"
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)

    return _PLACEHOLDER.sub(fill, template)
