"""JSON rendering of a Report per report-contract.md (schema in coherence_diag/schemas/)."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from typing import Any

from coherence_diag.model import FeatureReading, Finding, Report
from coherence_diag.model.provenance import to_dict as provenance_to_dict

# Floats are rounded so that the last bits of a parallel floating-point sum cannot make two
# runs on the same trace differ: the same trace gives byte-identical JSON.
_DIGITS = 6


def report_to_dict(report: Report) -> dict[str, Any]:
    raw = dataclasses.asdict(report)
    out: dict[str, Any] = {
        "schema_version": raw.pop("schema_version"),
        "tool": {"name": "coherence-diag", "version": raw.pop("tool_version")},
        "window_s": raw.pop("window_s"),
        "trace": raw["trace"],
        "metrics": raw["metrics"],
        "indices": raw["indices"],
        "index_breakdown": raw["index_breakdown"],
        "findings": [finding_to_dict(f) for f in report.findings],
        "evaluability": raw["evaluability"],
    }
    if raw["unexplained_indices"]:  # an addition to the contract, present only when it says something
        out["unexplained_indices"] = raw["unexplained_indices"]
    if report.features is not None:  # `analyze --features`
        out["features"] = {name: reading_to_dict(r) for name, r in report.features.items()}
    if report.provenance is not None:  # a converted trace: where each column came from
        out["provenance"] = provenance_to_dict(report.provenance)
    return _clean(out)


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    """A finding as report-contract.md states it: `evidence` the object {name: value}; then, an
    addition to the contract, `evidence_units` {name: unit} for the evidence that is a feature's
    value (features.UNITS; details such as pools, devices and windows have none)."""
    out: dict[str, Any] = {f.name: getattr(finding, f.name) for f in dataclasses.fields(finding)}
    out["evidence"] = dict(finding.evidence)
    out["absent_evidence"] = [dataclasses.asdict(a) for a in finding.absent_evidence]
    out["evidence_units"] = finding.evidence.units()
    return out


def reading_to_dict(reading: FeatureReading) -> dict[str, Any]:
    """{"value", "unit"}, and for an undefined feature "missing" (the columns that would give it)
    or "reason" (why it is undefined although its columns are present)."""
    out: dict[str, Any] = {"value": reading.value, "unit": reading.unit}
    if reading.missing:
        out["missing"] = list(reading.missing)
    elif reading.value is None:
        out["reason"] = reading.reason
    return out


def render(report: Report) -> str:
    return dumps(report_to_dict(report))


def dumps(value: Any) -> str:
    """Deterministic JSON text of any plain value (dataclasses first go through `asdict`)."""
    return json.dumps(_clean(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package for `analyze --format json`."""
    return load_schema("report-v1.schema.json")


def load_schema(filename: str) -> dict[str, Any]:
    """A JSON Schema shipped in coherence_diag/schemas/."""
    return json.loads(resources.files("coherence_diag.schemas").joinpath(filename).read_text("utf-8"))


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # the contract forbids NaN/Infinity; a non-finite value is not a measurement
        rounded = round(value, _DIGITS)
        return 0.0 if rounded == 0 else rounded
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
