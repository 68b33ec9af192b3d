"""Findings of the two sides paired by rule: new, resolved, persisting."""

from __future__ import annotations

from coherence_diag.compare import finding_changes
from coherence_diag.model import Finding


def finding(rule: str, severity: str = "medium", score: float = 0.5) -> Finding:
    return Finding(rule, "pattern", None, "AI.04", (), severity, score, f"{rule} summary", {})  # type: ignore[arg-type]


def test_new_resolved_and_persisting():
    base = (finding("a"), finding("b", "high"))
    cand = (finding("b", "critical", 0.9), finding("c"))
    changes = {c.rule: c for c in finding_changes(base, cand)}
    assert changes["a"].status == "resolved" and changes["a"].severity_candidate is None
    assert changes["c"].status == "new" and changes["c"].severity_base is None
    b = changes["b"]
    assert b.status == "persisting" and (b.severity_base, b.severity_candidate) == ("high", "critical")
    assert b.summary == "b summary"


def test_new_findings_come_first_then_persisting_then_resolved():
    order = [c.status for c in finding_changes((finding("a"), finding("b")), (finding("b"), finding("z")))]
    assert order == ["new", "persisting", "resolved"]


def test_no_findings_no_changes():
    assert finding_changes((), ()) == ()
