"""Documentation stays true to the code: generated pages are current, every column and metric
the tool produces is documented."""

from __future__ import annotations

import dataclasses

from coherence_diag import docgen
from coherence_diag.model import Metrics
from coherence_diag.paths import REQUEST_SCHEMA
from tests.conftest import REPO


def test_generated_pages_are_up_to_date():
    assert docgen.main([str(REPO / "docs"), "--check"]) == 0, "run `make docs`"


def test_every_request_column_is_documented():
    text = (REPO / "docs" / "paths.md").read_text()
    missing = [c for c in REQUEST_SCHEMA if f"`{c}`" not in text]
    assert not missing, missing


def test_every_metric_is_documented():
    text = (REPO / "docs" / "metrics.md").read_text()
    missing = [f.name for f in dataclasses.fields(Metrics) if f"`{f.name}`" not in text]
    assert not missing, missing
