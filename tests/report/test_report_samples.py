"""Issue 10's acceptance on the shipped samples: `report sample_traces/*.parquet` lists every
sample in the index, and every degraded sample's page shows its finding with a chart that
supports it (drawn, linked from the finding and linking back). Built once, with worker
processes and the chart process, as the command runs by default."""

from __future__ import annotations

import json
import re

import pytest

from coherence_diag.reports import build_reports
from tests.conftest import REPO

SAMPLES = REPO / "sample_traces"
LABELS = json.loads((SAMPLES / "labels.json").read_text())["traces"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def all_samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    result = build_reports(sorted(str(p) for p in SAMPLES.glob("*.parquet")), out, jobs=2)
    return out, result


def test_the_index_lists_every_sample(all_samples):
    out, result = all_samples
    assert result.exit_code(keep_going=False) == 0
    index = (out / "index.html").read_text()
    assert len(LABELS) == 15
    for entry in LABELS:
        name = entry["file"].removesuffix(".parquet")
        assert f'<a href="{name}.html">{name}</a>' in index, name
        assert (out / f"{name}.html").is_file()


@pytest.mark.parametrize("entry", [e for e in LABELS if e["expected_rule"]], ids=lambda e: e["scenario"])
def test_a_degraded_sample_shows_its_finding_with_a_supporting_chart(all_samples, entry):
    out, _ = all_samples
    rule = entry["expected_rule"]
    page = (out / f"{entry['file'].removesuffix('.parquet')}.html").read_text()
    finding = re.search(rf'<section class="finding" id="finding-{rule}".*?</section>', page, flags=re.S)
    assert finding, f"no {rule} finding"
    drawn = []
    for chart in re.findall(r'<a href="#chart-([a-z-]+)">[^<]*</a>(?! \(not shown)', finding.group(0)):
        section = re.search(rf'<section class="chart" id="chart-{chart}".*?\n  </section>', page, flags=re.S).group(0)
        if "<svg" in section and f'<a href="#finding-{rule}">{rule}</a>' in section:
            drawn.append(chart)
    assert drawn, f"{rule}: no drawn chart supports the finding"
