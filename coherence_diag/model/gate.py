"""The result of checking a trace against a gate policy (`gate`).

`gate.evaluate` builds a `GateResult`; render/gate.py renders it (terminal, JSON:
schemas/gate-v1.schema.json, Markdown, JUnit XML).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GATE_SCHEMA_VERSION = "1"

Status = Literal["pass", "fail", "skipped"]


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
    evaluated: bool = True  # False: the status comes from if_missing / if_no_baseline, not from a comparison
    missing_columns: tuple[str, ...] = ()  # trace columns that would make what was not evaluable evaluable


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
