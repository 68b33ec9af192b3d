"""The terminal view of findings: scalar evidence inline, lists of records as small tables,
every trace-derived string escaped."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console

from coherence_diag import analyze
from coherence_diag.model import Finding
from coherence_diag.render import terminal
from tests.conftest import REPO


def _text(report) -> str:
    out = io.StringIO()
    terminal.render(report, Console(file=out, width=160, color_system=None))
    return out.getvalue()


def _with_finding(evidence: dict) -> object:
    report = analyze(REPO / "sample_traces" / "healthy.parquet").report
    finding = Finding("burst-amplification", "pattern", None, "AI.27", (), "high", 0.8, "summary", evidence)
    return replace(report, findings=(finding,))


def test_records_are_a_table_of_at_most_five_rows_with_compact_times():
    episodes = [{"start": f"2026-01-01T00:00:{10 + i:02d}.000000Z", "burst_s": 7.0, "timeouts": i} for i in range(8)]
    text = _text(_with_finding({"burst_episodes": 8.0, "bursts": episodes}))
    assert "evidence: burst_episodes=8" in text
    assert "bursts (8, first 5)" in text
    header = next(line for line in text.splitlines() if "start" in line and "burst_s" in line)
    assert "timeouts" in header
    assert "01-01 00:00:14" in text and "01-01 00:00:15" not in text  # five rows only
    assert "'start'" not in text  # not a printed Python dict


def test_trace_derived_strings_in_records_are_escaped():
    text = _text(_with_finding({"devices": [{"device": "[bold]gpu0[/bold]", "ratio": 2.5}]}))
    assert "[bold]gpu0[/bold]" in text  # shown literally, not interpreted as markup
