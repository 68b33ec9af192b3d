"""The typed result model: what the tool found, independent of how it is shown.

One model for every subject the tool reports on, each rendered by every output format
(render/registry.py); nothing computes in a renderer:

- `Report` (report.py): one analyzed trace, its findings with typed `Evidence` (evidence.py);
- `Comparison` (comparison.py): two traces or two environments, before / after;
- `GateResult` (gate.py): a trace checked against a policy;
- `Visual` (visuals.py): the aggregate table behind one chart of an HTML report, or why the
  trace cannot support that chart.

This package imports nothing else of coherence_diag: every layer may import it.
"""

from coherence_diag.model.comparison import (
    COMPARISON_SCHEMA_VERSION,
    Change,
    Comparison,
    ComponentChange,
    FindingChange,
    MeasureChange,
    Shift,
    Side,
)
from coherence_diag.model.evidence import Evidence, EvidenceItem, EvidenceKind
from coherence_diag.model.gate import GATE_SCHEMA_VERSION, CheckResult, FindingRef, GateResult, RegressionItem, Status
from coherence_diag.model.provenance import (
    COLUMN_STATUSES,
    PROVENANCE_SCHEMA_VERSION,
    ColumnOrigin,
    ColumnStatus,
    MetricSummary,
    Provenance,
    SourceUse,
)
from coherence_diag.model.report import (
    SCHEMA_VERSION,
    SEVERITIES,
    AbsentEvidence,
    Evaluability,
    FeatureReading,
    Finding,
    IndexBreakdown,
    Indices,
    Metrics,
    Quantiles,
    Report,
    RequestCounts,
    Severity,
    TraceFacts,
    UnexplainedIndex,
    iso_utc,
)
from coherence_diag.model.visuals import Episode, EpisodeKind, Visual, VisualKind, VisualTable

__all__ = [
    "COLUMN_STATUSES",
    "PROVENANCE_SCHEMA_VERSION",
    "ColumnOrigin",
    "ColumnStatus",
    "Provenance",
    "MetricSummary",
    "SourceUse",
    "COMPARISON_SCHEMA_VERSION",
    "GATE_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "SEVERITIES",
    "AbsentEvidence",
    "Change",
    "CheckResult",
    "Comparison",
    "ComponentChange",
    "Evaluability",
    "Evidence",
    "EvidenceItem",
    "EvidenceKind",
    "Episode",
    "EpisodeKind",
    "FeatureReading",
    "Finding",
    "FindingChange",
    "FindingRef",
    "GateResult",
    "Indices",
    "IndexBreakdown",
    "MeasureChange",
    "Metrics",
    "Quantiles",
    "RegressionItem",
    "Report",
    "RequestCounts",
    "Severity",
    "Shift",
    "Side",
    "Status",
    "TraceFacts",
    "UnexplainedIndex",
    "Visual",
    "VisualKind",
    "VisualTable",
    "iso_utc",
]
