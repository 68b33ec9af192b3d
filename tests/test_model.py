"""The typed result model: findings carry typed evidence with the unit of each feature value,
and the JSON says so (additively: `evidence_units`)."""

from __future__ import annotations

import json
import pickle

import jsonschema
import pytest

from coherence_diag import analyze
from coherence_diag.features import FEATURES
from coherence_diag.model import Evidence, EvidenceItem, Finding
from coherence_diag.render import json_report
from tests.conftest import REPO


@pytest.fixture(scope="module")
def burst_report():
    return analyze(REPO / "sample_traces" / "burst-amplification.parquet").report


def test_feature_evidence_carries_the_feature_unit(burst_report):
    finding = next(f for f in burst_report.findings if f.rule == "burst-amplification")
    values = [e for e in finding.evidence.entries if e.kind == "value"]
    assert values, "the rule lists features as evidence"
    for item in values:
        assert item.unit == FEATURES[item.name].unit, item
    details = [e for e in finding.evidence.entries if e.kind == "detail"]
    assert all(e.unit is None for e in details)


def test_json_lists_evidence_units_and_validates(burst_report):
    doc = json.loads(json_report.render(burst_report))
    jsonschema.validate(doc, json_report.schema())
    for finding in doc["findings"]:
        units = finding["evidence_units"]
        assert set(units) <= set(finding["evidence"])
        assert all(units[name] == FEATURES[name].unit for name in units)
    assert any(f["evidence_units"] for f in doc["findings"])


def test_evidence_reads_like_the_json_object():
    evidence = Evidence([EvidenceItem("x_frac", 0.5, "frac", "value"), EvidenceItem("pool", "p0"), EvidenceItem("x_frac", 0.25, "frac", "value")])
    assert evidence == {"x_frac": 0.25, "pool": "p0"}  # a later item replaces an earlier one in its place
    assert list(evidence) == ["x_frac", "pool"]
    assert evidence.units() == {"x_frac": "frac"}
    assert evidence.with_detail("explained_by", ["a"])["explained_by"] == ["a"]
    with pytest.raises(KeyError):
        evidence["absent"]


def test_findings_survive_pickling_with_their_units(burst_report):
    """Findings cross process boundaries (rules score analyzes in worker processes)."""
    for finding in burst_report.findings:
        copy = pickle.loads(pickle.dumps(finding))
        assert copy == finding and copy.evidence.units() == finding.evidence.units()


def test_a_plain_mapping_becomes_evidence_without_units_and_anything_else_is_refused():
    finding = Finding("r", "pattern", None, "AI.27", (), "low", 0.1, "s", {"n": 1})
    assert isinstance(finding.evidence, Evidence) and finding.evidence.units() == {}
    with pytest.raises(TypeError):
        Finding("r", "pattern", None, "AI.27", (), "low", 0.1, "s", [("n", 1)])  # type: ignore[arg-type]
