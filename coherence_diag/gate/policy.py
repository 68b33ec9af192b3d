"""Load and validate gate policy files (YAML). A policy is data: nothing in it is run.

Schema (docs/gate.md):

    policy: 1                     # schema version
    name: serving-default
    description: ...
    checks:
      - id: coherence             # unique, lower-case letters, digits, '-'
        measure: CI               # a name of measures.MEASURES
        min: 0.7                  # and/or max
        if_missing: fail          # or skip: what to do when the trace cannot give the value
      - id: no-finding-above-low
        findings: {max_severity: low, rules: [...], domains: [...], kinds: [...]}
      - id: no-regression
        regression: {measures: [latency_ms.p99, CI], max_relative: 0.10, if_no_baseline: skip}

As with rule files, every problem of the file is collected and reported together as one
RuleError (exit 2) naming the file, the check and the problem.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from coherence_diag.errors import RuleError, collected
from coherence_diag.measures import MEASURES
from coherence_diag.model import SEVERITIES
from coherence_diag.rules.loader import load_rules
from coherence_diag.taxonomy import DOMAINS, KINDS

POLICY_VERSION = 1
MAX_SEVERITIES: tuple[str, ...] = ("none", *SEVERITIES)  # "none": no matching finding is allowed
IfMissing = Literal["fail", "skip"]
IF_MISSING = ("fail", "skip")

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TOP_KEYS = ("policy", "name", "description", "checks")
_CHECK_KINDS = ("measure", "findings", "regression")
_COMMON_KEYS = ("id", "description", "if_missing")
_MEASURE_KEYS = ("min", "max")
_FINDINGS_KEYS = ("max_severity", "rules", "domains", "kinds")
_REGRESSION_KEYS = ("measures", "max_relative", "if_no_baseline")


@dataclass(frozen=True)
class MeasureCheck:
    """The measure must lie within [min, max] (either bound may be absent)."""

    id: str
    description: str
    measure: str
    min: float | None
    max: float | None
    if_missing: IfMissing = "fail"


@dataclass(frozen=True)
class FindingsCheck:
    """No finding matching the filters may be more severe than `max_severity`."""

    id: str
    description: str
    max_severity: str = "none"
    rules: tuple[str, ...] = ()  # empty: every rule
    domains: tuple[str, ...] = ()  # matched against a finding's domain and supporting domains
    kinds: tuple[str, ...] = ()
    if_missing: IfMissing = "fail"  # applies to listed `rules` that the trace cannot evaluate


@dataclass(frozen=True)
class RegressionCheck:
    """No listed measure may be worse than the baseline's by more than `max_relative`."""

    id: str
    description: str
    measures: tuple[str, ...]
    max_relative: float
    if_missing: IfMissing = "fail"
    if_no_baseline: IfMissing = "skip"


Check = MeasureCheck | FindingsCheck | RegressionCheck


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    checks: tuple[Check, ...]
    source: str  # the file it came from, as given
    version: int = POLICY_VERSION

    @property
    def needs_baseline(self) -> bool:
        return any(isinstance(c, RegressionCheck) for c in self.checks)


def load_policy(path: str | Path, rules_dirs: list[Path] | None = None) -> Policy:
    """Read and validate a policy file; rule ids are checked against the shipped rules and `rules_dirs`."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise RuleError(f"{path}: policy file not found", path=str(path)) from None
    except IsADirectoryError:
        raise RuleError(f"{path}: is a directory, expected a policy file (.yaml)", path=str(path)) from None
    except UnicodeDecodeError:
        raise RuleError(f"invalid policy file: {path}: not UTF-8 text", path=str(path)) from None
    except OSError as exc:
        raise RuleError(f"{path}: cannot read policy file ({exc.strerror})", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"invalid policy file: {path}: not valid YAML ({str(exc).splitlines()[0]})", path=str(path)) from None
    rule_ids = frozenset(r.id for r in load_rules(list(rules_dirs or [])))
    return parse_policy(data, str(path), rule_ids)


def parse_policy(data: Any, source: str, rule_ids: frozenset[str]) -> Policy:
    """Validate the parsed YAML of a policy; all problems are raised together as one RuleError."""
    problems: list[str] = []
    policy = _build_policy(data, source, rule_ids, problems)
    if problems:
        raise collected(RuleError, "policy file", source, problems)
    return policy  # type: ignore[return-value]  # None only together with problems


def _build_policy(data: Any, source: str, rule_ids: frozenset[str], problems: list[str]) -> Policy | None:
    data = _mapping(data, "the policy file", _TOP_KEYS, source, problems, label="top-level ")
    if data is None:
        return None
    version = data.get("policy")
    if "policy" not in data:
        problems.append(f"{source}: missing 'policy: {POLICY_VERSION}' (the schema version)")
    elif isinstance(version, bool) or version != POLICY_VERSION:
        problems.append(f"{source}: unsupported policy version {version!r}; this tool reads version {POLICY_VERSION}")
    name = _text(data, "name", f"{source}", problems, required=True)
    description = _text(data, "description", f"{source}", problems, required=False)
    raw_checks = data.get("checks")
    checks: list[Check] = []
    if not isinstance(raw_checks, list) or not raw_checks:
        problems.append(f"{source}: 'checks' must be a non-empty list of checks")
    else:
        seen: set[str] = set()
        for i, item in enumerate(raw_checks):
            check = _build_check(item, f"{source}: check #{i + 1}", rule_ids, problems, source)
            if check is None:
                continue
            if check.id in seen:
                problems.append(f"{source}: check {check.id!r}: duplicate check id")
                continue
            seen.add(check.id)
            checks.append(check)
    return Policy(name=name, description=description, checks=tuple(checks), source=source)


def _build_check(item: Any, where: str, rule_ids: frozenset[str], problems: list[str], source: str) -> Check | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a mapping (id and one of {', '.join(_CHECK_KINDS)}), got {_type_name(item)}")
        return None
    before = len(problems)
    check_id = item.get("id")
    if not isinstance(check_id, str) or not _ID.match(check_id):
        problems.append(f"{where}: 'id' must be lower-case letters, digits and '-', got {check_id!r}")
        check_id = ""
    else:
        where = f"{source}: check {check_id!r}"
    kinds = [k for k in _CHECK_KINDS if k in item]
    if len(kinds) != 1:
        problems.append(f"{where}: needs exactly one of {', '.join(_CHECK_KINDS)}, got {len(kinds)}")
        return None
    kind = kinds[0]
    allowed = (*_COMMON_KEYS, kind, *(_MEASURE_KEYS if kind == "measure" else ()))
    _mapping(item, "a check", allowed, where, problems)
    description = _text(item, "description", where, problems, required=False)
    if_missing = _choice(item.get("if_missing", "fail"), "if_missing", IF_MISSING, where, problems)
    if kind == "measure":
        check: Check | None = _measure_check(item, check_id, description, if_missing, where, problems)
    elif kind == "findings":
        check = _findings_check(item["findings"], check_id, description, if_missing, where, rule_ids, problems)
    else:
        check = _regression_check(item["regression"], check_id, description, if_missing, where, problems)
    return check if len(problems) == before else None


def _measure_check(item: dict, check_id: str, description: str, if_missing: Any, where: str, problems: list[str]) -> MeasureCheck | None:
    name = item["measure"]
    if not isinstance(name, str) or name not in MEASURES:
        problems.append(f"{where}: unknown measure {name!r}{_suggest(name, MEASURES)} (see docs/gate.md for the list)")
        return None
    if "min" not in item and "max" not in item:
        problems.append(f"{where}: a measure check needs 'min', 'max' or both")
        return None
    lo = _threshold(item, "min", name, where, problems)
    hi = _threshold(item, "max", name, where, problems)
    if lo is not None and hi is not None and lo > hi:
        problems.append(f"{where}: min {lo:g} is greater than max {hi:g}")
    return MeasureCheck(check_id, description, name, lo, hi, if_missing)


def _threshold(item: dict, key: str, name: str, where: str, problems: list[str]) -> float | None:
    if key not in item:
        return None
    value = item[key]
    number = _number(value)
    if number is None:
        problems.append(f"{where}: {key} must be a finite number, got {value!r}")
        return None
    unit = MEASURES[name].unit
    if unit in ("frac", "index") and not 0 <= number <= 1:
        problems.append(f"{where}: {key} {number:g} is outside [0, 1], the range of {name} ({unit})")
    elif unit in ("ms", "rps") and number < 0:
        problems.append(f"{where}: {key} {number:g} is negative; {name} is in {unit}")
    return number


def _findings_check(
    spec: Any, check_id: str, description: str, if_missing: Any, where: str, rule_ids: frozenset[str], problems: list[str]
) -> FindingsCheck | None:
    if spec is None:
        spec = {}
    spec = _mapping(spec, "'findings'", _FINDINGS_KEYS, where, problems, label="findings ")
    if spec is None:
        return None
    max_severity = _choice(spec.get("max_severity", "none"), "max_severity", MAX_SEVERITIES, where, problems)
    rules = _names(spec, "rules", sorted(rule_ids), "rule", where, problems)
    domains = _names(spec, "domains", DOMAINS, "domain", where, problems)
    kinds = _names(spec, "kinds", KINDS, "kind", where, problems)
    return FindingsCheck(check_id, description, max_severity, rules, domains, kinds, if_missing)


def _regression_check(spec: Any, check_id: str, description: str, if_missing: Any, where: str, problems: list[str]) -> RegressionCheck | None:
    spec = _mapping(spec, "'regression'", _REGRESSION_KEYS, where, problems, label="regression ")
    if spec is None:
        return None
    measures = _names(spec, "measures", tuple(MEASURES), "measure", where, problems)
    for name in measures:
        if name in MEASURES and MEASURES[name].better not in ("lower", "higher"):
            problems.append(f"{where}: measure {name!r} is context with no better direction; bound it with a measure check instead")
    if "measures" in spec and not measures and isinstance(spec["measures"], list):
        problems.append(f"{where}: regression: 'measures' must list at least one measure")
    elif "measures" not in spec:
        problems.append(f"{where}: regression: missing 'measures' (the measures to compare with the baseline)")
    limit = spec.get("max_relative")
    max_relative = _number(limit)
    if max_relative is None or max_relative < 0:
        problems.append(f"{where}: regression: max_relative must be a finite number >= 0 (0.10 = 10% worse), got {limit!r}")
    if_no_baseline = _choice(spec.get("if_no_baseline", "skip"), "if_no_baseline", IF_MISSING, where, problems)
    return RegressionCheck(check_id, description, measures, max_relative or 0.0, if_missing, if_no_baseline)


def _mapping(value: Any, what: str, keys: tuple[str, ...], where: str, problems: list[str], label: str = "") -> dict | None:
    """`value` if it is a mapping (unknown keys reported, with close names), else None and a problem."""
    if not isinstance(value, dict):
        problems.append(f"{where}: {what} must be a mapping of {', '.join(keys)}, got {_type_name(value)}")
        return None
    for key in value:
        if key not in keys:
            problems.append(f"{where}: unknown {label}key {key!r}{_suggest(key, keys)} (allowed: {', '.join(keys)})")
    return value


def _names(spec: dict, key: str, known: Any, what: str, where: str, problems: list[str]) -> tuple[str, ...]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: {key!r} must be a list of {what} names, got {value!r}")
        return ()
    for v in value:
        if v not in known:
            problems.append(f"{where}: unknown {what} {v!r}{_suggest(v, known)}")
    if len(set(value)) != len(value):
        problems.append(f"{where}: {key!r} lists a {what} twice")
    return tuple(value)


def _choice(value: Any, key: str, allowed: tuple[str, ...], where: str, problems: list[str]) -> Any:
    if not isinstance(value, str) or value not in allowed:
        problems.append(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _text(data: dict, key: str, where: str, problems: list[str], *, required: bool) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {key!r} must be non-empty text")
        return ""
    return value.strip()


def _number(value: Any) -> float | None:
    """A finite int or float; YAML booleans and text (however it looks) are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _suggest(name: Any, known: Any) -> str:
    if not isinstance(name, str):
        return ""
    # Case-insensitive, and a lower cutoff than difflib's: index names are two letters ('CJ' -> 'CI').
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
