"""summary.json of a batch of reports (`coherence-diag report`): every trace, worst first, for
machines (registry: subject "batch", format "json"). Schema:
coherence_diag/schemas/summary-v1.schema.json; documented in docs/report-html.md."""

from __future__ import annotations

from typing import Any

from coherence_diag import __version__
from coherence_diag.batch import Batch, TraceEntry, verdict_counts
from coherence_diag.render import json_report
from coherence_diag.render.compare import verdict as comparison_verdict

SUMMARY_SCHEMA_VERSION = "1"


def summary_to_dict(batch: Batch) -> dict[str, Any]:
    ranked = batch.ranked
    options = batch.options
    policy = options.policy
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "tool": {"name": "coherence-diag", "version": __version__},
        "options": {
            "window_s": options.window_s,
            "max_bad_fraction": options.max_bad_fraction,
            "baseline": options.baseline,
            "policy": None if policy is None else {"name": policy.name, "path": policy.source},
        },
        "counts": {"traces": len(ranked), **{v: n for v, n in verdict_counts(ranked).items()}},
        "traces": [_trace(i + 1, e) for i, e in enumerate(ranked)],
    }


def _trace(position: int, e: TraceEntry) -> dict[str, Any]:
    r = e.report
    page = f"{e.name}.html" if r is not None else None
    worst = e.worst_finding
    c = e.comparison
    return {
        "rank": position,
        "name": e.name,
        "path": e.path,
        "page": page,
        "verdict": e.verdict,
        "error": e.error,
        "gate": None if e.gate is None else {"passed": e.gate.passed, "counts": e.gate.counts},
        "worst_finding": None
        if worst is None
        else {
            "rule": worst.rule,
            "severity": worst.severity,
            "score": worst.score,
            "summary": worst.summary,
            "anchor": f"{page}#finding-{worst.rule}",
        },
        "indices": None if r is None else {"CI": r.indices.CI, "DI": r.indices.DI, "WPI": r.indices.WPI, "HCL": r.indices.HCL},
        "latency_p99_ms": None if r is None else r.metrics.latency_ms.p99,
        "slo_attainment": None if r is None else r.metrics.slo_attainment,
        "findings": [] if r is None else [{"rule": f.rule, "severity": f.severity, "score": f.score} for f in r.findings],
        "unexplained_indices": [] if r is None else [u.index for u in r.unexplained_indices],
        "comparison": None
        if c is None
        else {
            "verdict": comparison_verdict(c),
            "worse_measures": [m.name for m in c.worse],
            "significant_shifts": [s.signal for s in c.significant_shifts],
            "new_findings": [f.rule for f in c.findings if f.status == "new"],
            "resolved_findings": [f.rule for f in c.findings if f.status == "resolved"],
        },
    }


def render_summary(batch: Batch) -> str:
    return json_report.dumps(summary_to_dict(batch))


def schema() -> dict[str, Any]:
    return json_report.load_schema("summary-v1.schema.json")

