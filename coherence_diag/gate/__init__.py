"""The CI gate: a policy file (data, never code) checked against a report, optionally a baseline.

    from coherence_diag.gate import load_policy, evaluate
    policy = load_policy("policies/serving-default.yaml")   # RuleError (exit 2) when invalid
    result = evaluate(policy, analyze("trace.parquet").report)
    result.passed, [c.message for c in result.failed]
"""

from coherence_diag.gate.evaluate import evaluate
from coherence_diag.gate.policy import FindingsCheck, MeasureCheck, Policy, RegressionCheck, load_policy, parse_policy
from coherence_diag.model import CheckResult, FindingRef, GateResult, RegressionItem

__all__ = [
    "CheckResult",
    "FindingRef",
    "FindingsCheck",
    "GateResult",
    "MeasureCheck",
    "Policy",
    "RegressionCheck",
    "RegressionItem",
    "evaluate",
    "load_policy",
    "parse_policy",
]
