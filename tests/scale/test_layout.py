"""The layout check: from the footers alone, whether time and layer predicates can skip row
groups; `analyze` notes a large trace whose layout forces full scans, and nothing else."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag import analyze
from coherence_diag.render.json_report import render
from coherence_diag.scale import layout
from coherence_diag.scale.footers import RowGroup, footers_of
from coherence_diag.scale.layout import NOTE_MIN_ROWS, PROBE_SLICES, check_layout, full_scan_note, time_amplification
from coherence_diag.scale.normalize import normalize
from tests.conftest import REPO
from tests.tracegen import TraceSpec, make_trace, write


def _shuffled(tmp_path):
    frame = make_trace(TraceSpec(n_requests=600, seed=2)).sample(fraction=1.0, shuffle=True, seed=4)
    path = tmp_path / "shuffled.parquet"
    frame.write_parquet(path, row_group_size=100, statistics=True)
    return path


def test_a_shuffled_trace_cannot_skip_and_its_normalized_copy_can(tmp_path):
    shuffled = _shuffled(tmp_path)
    before = check_layout(footers_of(shuffled))
    assert not before.time_skips and not before.layer_skips
    assert "not clustered by time" in before.problems[0]
    assert before.time_amplification is not None and before.time_amplification > PROBE_SLICES / 2
    normalize(shuffled, tmp_path / "n.parquet", row_group_rows=100)
    after = check_layout(footers_of(tmp_path / "n.parquet"))
    assert after.time_skips and after.layer_skips and after.rows == before.rows
    assert after.time_amplification is not None and after.time_amplification < 4


def test_csv_statistics_free_and_huge_row_groups_are_named(tmp_path, trace_frame):
    write(trace_frame, tmp_path / "t.csv")
    assert any("CSV" in p for p in check_layout(footers_of(tmp_path / "t.csv")).problems)
    trace_frame.write_parquet(tmp_path / "bare.parquet", statistics=False)
    assert "row groups without `ts` statistics" in check_layout(footers_of(tmp_path / "bare.parquet")).problems
    huge = [RowGroup(layout.MAX_ROW_GROUP_ROWS + 1, 0, 10, "gpu", "gpu")]
    from coherence_diag.scale.footers import FileFooter

    assert "more than" in check_layout([FileFooter("h.parquet", "parquet", tuple(huge))]).problems[0]


def test_footers_read_times_in_any_unit_and_layers_from_file_names(tmp_path):
    stamp = datetime(2026, 1, 1, 0, 0, 1, 250_000)
    table = pa.table({"ts": pa.array([stamp], pa.timestamp("us")), "event": ["sample"], "host": ["h"]})
    (tmp_path / "layers").mkdir()
    pq.write_table(table, tmp_path / "layers" / "hypervisor.parquet")
    pq.write_table(pa.table({"ts": ["2026-01-01T00:00:01Z"], "layer": ["gpu"], "event": ["exec"]}), tmp_path / "text.parquet")
    (group,) = footers_of(tmp_path / "layers")[0].row_groups
    assert group.ts_min_ns == int(pl.Series([stamp]).dt.epoch("ns")[0]) and group.layer_min == group.layer_max == "hypervisor"
    (text,) = footers_of(tmp_path / "text.parquet")[0].row_groups
    assert not text.has_ts_stats and text.layer_min == "gpu"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 100)), min_size=1, max_size=30))
def test_read_amplification_is_between_one_and_the_number_of_slices(spans):
    groups = [RowGroup(n, a, a + b) for a, b, n in spans]
    assert 1.0 - 1e-9 <= time_amplification(groups) <= PROBE_SLICES + 1e-9


def test_the_note_only_for_large_traces_whose_layout_forces_full_scans(tmp_path):
    bad = check_layout(footers_of(_shuffled(tmp_path)))
    assert full_scan_note(bad, NOTE_MIN_ROWS - 1, "t.parquet") is None
    note = full_scan_note(bad, NOTE_MIN_ROWS, "t.parquet")
    assert note is not None and "coherence-diag normalize t.parquet" in note and "\n" not in note


def test_analyze_adds_the_note_to_the_trace_warnings(tmp_path, monkeypatch):
    shuffled = _shuffled(tmp_path)
    normalize(shuffled, tmp_path / "n.parquet", row_group_rows=100)
    monkeypatch.setattr(layout, "NOTE_MIN_ROWS", 0)
    assert any(w.startswith("layout: ") for w in analyze(str(shuffled)).report.trace.warnings)
    assert not any(w.startswith("layout: ") for w in analyze(str(tmp_path / "n.parquet")).report.trace.warnings)


def test_shipped_samples_get_no_note():
    """The samples are small and fixtures users read: their reports stay as they were."""
    report = json.loads(render(analyze(str(REPO / "sample_traces" / "healthy.parquet")).report))
    assert not any(w.startswith("layout: ") for w in report["trace"]["warnings"])
