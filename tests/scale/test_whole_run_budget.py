"""`--memory-budget` is a budget for the whole `analyze` run (scale/read.py, plan.RunEstimate):
the units get the budget less the reserve for what the process holds besides them; a trace whose
one pass fits the budget is still read in one pass; a budget that the analysis after the units
would exceed anyway is refused up front (exit 2) with the smallest budget that fits, while the
default budget (half the machine's memory) never refuses a trace.

On small synthetic traces the measured constants (hundreds of MiB) would put every trace in one
pass, so the behaviours that need units are checked with the constants scaled down (`small_model`)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coherence_diag.errors import InputError
from coherence_diag.ingest import open_trace
from coherence_diag.scale import plan, read
from coherence_diag.scale.footers import read_footers
from coherence_diag.scale.plan import RunEstimate, parse_bytes, plan_units
from coherence_diag.scale.read import ScaleOptions, plan_run, read_in_units
from tests.scale.test_plan import footers
from tests.scale.test_units_equal import SAMPLES

SAMPLE = next(p for p in SAMPLES if p.stem == "healthy")
S = 1_000_000_000


@pytest.fixture
def small_model(monkeypatch):
    """The whole-run model scaled down to `trace` (3,403 rows, ~7 KB of footer bytes a second, so
~170 KB estimated per 1 s window): a reserve of 100 KB + 8 B per row, an analysis of 500 KB + 16
B per row, units of at least 400 KB."""
    for name, value in {
        "RESERVE_FIXED_BYTES": 100_000,
        "RESERVE_PER_ROW_BYTES": 8.0,
        "ANALYSIS_FIXED_BYTES": 500_000,
        "ANALYSIS_PER_ROW_BYTES": 16.0,
        "MIN_UNIT_BUDGET_BYTES": 400_000,
    }.items():
        monkeypatch.setattr(plan, name, value)


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """The healthy sample's first 20 s, in row groups of 500 rows."""
    frame = pl.read_parquet(SAMPLE)
    first = frame.filter(pl.col("ts") < pl.col("ts").min() + pl.duration(seconds=20)).sort("ts", maintain_order=True)
    path = tmp_path_factory.mktemp("budget") / "trace.parquet"
    first.write_parquet(path, row_group_size=500, statistics=True)
    return path


def estimate_of(path: Path) -> RunEstimate:
    whole = plan_units(read_footers(open_trace(path)), budget_bytes=1 << 40)
    return RunEstimate(whole.rows, whole.footer_bytes)


# --- the reserve is subtracted ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**11), st.integers(1, 10**12))
def test_the_units_get_the_budget_less_the_reserve_and_never_less_than_the_smallest_unit(rows, footer_bytes, budget):
    estimate = RunEstimate(rows, footer_bytes)
    unit_budget = estimate.unit_budget_bytes(budget)
    assert estimate.reserve_bytes > 0
    assert unit_budget == max(plan.MIN_UNIT_BUDGET_BYTES, int(budget - estimate.reserve_bytes))
    if budget >= estimate.smallest_budget_bytes and estimate.one_pass_bytes > budget:
        # what units are asked for: the unit and what stays beside it fit the whole budget
        assert unit_budget + estimate.reserve_bytes <= budget


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**11), st.integers(1, 10**12), st.integers(1, 16))
def test_units_running_at_once_share_the_budget_less_the_reserve(rows, footer_bytes, budget, at_once):
    """A local cluster's workers each run a unit at once on this machine: every unit, the others
    beside it and the reserve fit the whole budget that the estimate accepts."""
    estimate = RunEstimate(rows, footer_bytes, units_at_once=at_once)
    unit_budget = estimate.unit_budget_bytes(budget)
    assert unit_budget == max(plan.MIN_UNIT_BUDGET_BYTES, int((budget - estimate.reserve_bytes) / at_once))
    if budget >= estimate.smallest_budget_bytes and estimate.one_pass_bytes > budget:
        assert at_once * unit_budget + estimate.reserve_bytes <= budget
    alone = RunEstimate(rows, footer_bytes)
    assert estimate.smallest_budget_bytes >= alone.smallest_budget_bytes


def test_the_local_scheduler_plans_one_share_of_the_budget_per_worker(small_model, trace, monkeypatch):
    monkeypatch.setattr(read, "local_workers", lambda: 2)
    estimate = estimate_of(trace)
    budget = 2 * estimate.smallest_budget_bytes
    local = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget, scheduler="local"), window_s=1.0)
    in_process = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget), window_s=1.0)
    shared = RunEstimate(estimate.rows, estimate.footer_bytes, units_at_once=2)
    assert local is not None and local.budget_bytes == shared.unit_budget_bytes(budget)
    assert local.budget_bytes < estimate.unit_budget_bytes(budget)
    assert in_process is None or in_process.budget_bytes == estimate.unit_budget_bytes(budget)


@pytest.mark.parametrize("share", [2, 3])
def test_a_run_that_shares_the_machine_plans_within_its_share_of_the_budget(small_model, trace, share):
    """The traces of a batch analyzed at once (worker processes, a local cluster's workers) each
    have 1/share of the budget (ScaleOptions.budget_share): a run with a share plans as a run
    given that share alone, and a share too small is refused naming the whole budget that fits."""
    estimate = estimate_of(trace)
    budget = share * estimate.smallest_budget_bytes + share
    shared = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget, budget_share=share), window_s=1.0)
    alone = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget // share), window_s=1.0)
    assert shared is not None and alone is not None and shared == alone
    too_small = share * estimate.smallest_budget_bytes - share * 1_000
    with pytest.raises(InputError) as raised:
        plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=too_small, budget_share=share), window_s=1.0)
    message = str(raised.value)
    assert f"its 1/{share} share of --memory-budget {too_small / 2**30:.2f} GiB" in message
    suggested = re.search(r"the smallest budget that fits is --memory-budget (\S+)$", message)
    assert suggested is not None and parse_bytes(suggested.group(1)) >= share * estimate.smallest_budget_bytes


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_the_reserve_and_the_analysis_grow_with_the_rows(rows, more):
    small, large = RunEstimate(rows, 0), RunEstimate(rows + more, 0)
    assert large.reserve_bytes > small.reserve_bytes and large.analysis_bytes > small.analysis_bytes
    assert large.smallest_budget_bytes >= small.smallest_budget_bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(0.0, 1.0))
def test_a_trace_read_in_units_is_planned_within_the_budget_less_the_reserve(small_model, trace, share):
    estimate = estimate_of(trace)
    budget = int(estimate.smallest_budget_bytes + share * (estimate.one_pass_bytes - estimate.smallest_budget_bytes))
    assume(budget < estimate.one_pass_bytes)
    got = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget), window_s=1.0)
    assert got is not None and len(got.units) > 1
    assert got.budget_bytes == int(budget - estimate.reserve_bytes) > plan.MIN_UNIT_BUDGET_BYTES
    for unit in got.units:
        assert unit.over_budget or unit.peak_bytes + estimate.reserve_bytes <= budget * (1 + 1e-9)
    # without the reserve, the units would be fewer (larger)
    assert len(plan_units(read_footers(open_trace(trace)), budget_bytes=budget).units) <= len(got.units)


def test_the_units_report_is_the_single_pass_report(small_model, trace):
    from coherence_diag.analysis import analyze
    from coherence_diag.render import registry

    estimate = estimate_of(trace)
    budget = estimate.smallest_budget_bytes
    assert plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget), window_s=1.0) is not None

    def report(scale: ScaleOptions | None) -> str:
        return registry.render_text("report", "json", analyze(trace, window_s=1.0, max_bad_fraction=1.0, scale=scale).report)

    assert report(ScaleOptions(memory_budget_bytes=budget)) == report(None)


# --- a trace that fits is read in one pass -----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(footers(), st.integers(500, 400_000))
def test_one_pass_is_chosen_as_before_when_the_analysis_is_not_the_larger(monkeypatch, files, budget):
    """The one-pass estimate adds no reserve (nothing else is alive in one pass): where the
    analysis estimate is below a unit of the whole trace (here: none), and for footers this small
    (the units' factor is below the single pass's line), the decision is the planner's old one,
    "the whole budget gives one unit"."""
    monkeypatch.setattr(plan, "ANALYSIS_FIXED_BYTES", 0)
    monkeypatch.setattr(plan, "ANALYSIS_PER_ROW_BYTES", 0.0)
    whole = plan_units(files, budget_bytes=budget, lookback_ns=0)
    estimate = RunEstimate(whole.rows, whole.footer_bytes)
    last_ns = max(g.ts_max_ns for g in files[0].row_groups)
    assume(last_ns >= whole.units[0].start_ns + whole.cell_ns)  # more than one window: it can be split
    assume(abs(plan.PEAK_PER_FOOTER_BYTE * whole.footer_bytes - budget) > 1e-6 * budget)  # not on the boundary
    assert (estimate.one_pass_bytes <= budget) == (len(whole.units) == 1)


def test_a_large_trace_is_estimated_by_the_single_pass_line_not_as_one_unit():
    # The single pass validates and projects one layer at a time: at the 20M-row tiled trace's
    # 645 MiB of footer bytes it peaked at 2,353 MiB, where one unit of every byte would be 16 GiB.
    footer_bytes = 645 * 2**20
    estimate = RunEstimate(rows=20_321_910, footer_bytes=footer_bytes)
    expected = plan.ONE_PASS_FIXED_BYTES + plan.ONE_PASS_PER_FOOTER_BYTE * footer_bytes
    assert estimate.one_pass_bytes == expected < plan.PEAK_PER_FOOTER_BYTE * footer_bytes
    assert 2_353 * 2**20 < estimate.one_pass_bytes < 4 * 2**30
    # A small trace keeps the units' factor, the smaller of the two there; never below its analysis.
    small = RunEstimate(rows=1_000, footer_bytes=2**20)
    assert small.one_pass_bytes == max(plan.PEAK_PER_FOOTER_BYTE * 2**20, small.analysis_bytes)


def test_a_sample_that_fits_is_read_in_one_pass_at_its_one_pass_estimate():
    estimate = estimate_of(SAMPLE)
    assert estimate.smallest_budget_bytes <= estimate.one_pass_bytes
    fits = ScaleOptions(memory_budget_bytes=int(estimate.one_pass_bytes) + 1)
    assert read_in_units(SAMPLE, fits, window_s=1.0, max_bad_fraction=0.01) is None
    assert read_in_units(SAMPLE, ScaleOptions(), window_s=1.0, max_bad_fraction=0.01) is None  # the default budget


def test_one_pass_needs_its_whole_estimate_not_a_units_budget(small_model, trace):
    """At exactly the one-pass estimate the trace is read in one pass, although the budget less
    the reserve would not hold it as one unit; one byte less and it is read in units."""
    estimate = estimate_of(trace)
    at = int(estimate.one_pass_bytes) + 1
    assert estimate.unit_budget_bytes(at) < plan.PEAK_PER_FOOTER_BYTE * estimate.footer_bytes
    assert plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=at), window_s=1.0) is None
    below = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=int(estimate.one_pass_bytes) - 1), window_s=1.0)
    assert below is not None and len(below.units) > 1


def test_a_scheduler_reads_in_units_even_a_trace_that_fits(small_model, trace):
    got = plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=1 << 40, scheduler="local"), window_s=1.0)
    assert got is not None and len(got.units) >= 1


# --- a budget the analysis cannot keep --------------------------------------------------------


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 500_000))
def test_a_budget_below_the_estimate_is_refused_naming_trace_estimate_and_smallest_budget(small_model, trace, short):
    estimate = estimate_of(trace)
    budget = estimate.smallest_budget_bytes - short
    assume(budget > 0)
    with pytest.raises(InputError) as raised:
        plan_run(open_trace(trace), ScaleOptions(memory_budget_bytes=budget), window_s=1.0)
    message = str(raised.value)
    assert "\n" not in message and str(trace) in message and "estimated" in message
    assert f"{estimate.rows:,} rows" in message


def test_the_cli_refuses_a_budget_below_the_estimate_with_exit_2_and_the_budget_that_fits(run_cli):
    result = run_cli("analyze", str(SAMPLE), "-f", "json", "--memory-budget", "64MiB", "--no-progress")
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and str(SAMPLE) in line and "--memory-budget 0.06 GiB" in line
    suggested = re.search(r"the smallest budget that fits is --memory-budget (\S+)$", line)
    assert suggested is not None
    assert parse_bytes(suggested.group(1)) >= estimate_of(SAMPLE).smallest_budget_bytes
    # the budget it names is accepted, and gives the same report
    again = run_cli("analyze", str(SAMPLE), "-f", "json", "--memory-budget", suggested.group(1), "--no-progress")
    plain = run_cli("analyze", str(SAMPLE), "-f", "json", "--no-progress")
    assert again.exit_code == plain.exit_code == 0 and again.stdout == plain.stdout


def test_a_window_over_the_units_budget_is_told_with_the_budget_that_holds_it(small_model, trace):
    """Windows are never split: a 10 s window whose estimate exceeds the units' budget may take
    the run past its budget, and the run says so, naming a budget that holds it (at which the plan
    has no such window). 1 s windows of the same trace at the same budget: nothing to tell."""
    estimate = estimate_of(trace)
    windows = plan_units(read_footers(open_trace(trace)), budget_bytes=1, window_s=10.0, lookback_ns=0)
    heaviest = max(u.peak_bytes for u in windows.units)
    budget = estimate.budget_for_unit_bytes(heaviest) - 1_000
    assert budget >= estimate.smallest_budget_bytes and budget < estimate.one_pass_bytes
    notes: list[str] = []

    def plan_at(budget_bytes: int, window_s: float) -> plan.UnitPlan | None:
        options = ScaleOptions(memory_budget_bytes=budget_bytes, scheduler="local", note=notes.append)
        return read.plan_run(open_trace(trace), options, window_s=window_s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(read, "local_workers", lambda: 1)
        got = plan_at(budget, 10.0)
        assert got is not None and len(notes) == 1
        note = notes.pop()
        assert "\n" not in note and str(trace) in note and "10 s windows" in note and "shorter --window" in note
        suggested = re.search(r"--memory-budget (\S+) or a shorter --window", note)
        assert suggested is not None
        assert plan_at(parse_bytes(suggested.group(1)), 10.0) is not None and not notes
        assert plan_at(budget, 1.0) is not None and not notes


def test_a_trace_that_cannot_be_planned_says_so_before_the_budget(run_cli, tmp_path):
    path = tmp_path / "t.csv"
    pl.read_parquet(SAMPLE).head(200).write_csv(path)
    result = run_cli("analyze", str(path), "--memory-budget", "1", "--no-progress")
    assert result.exit_code == 2 and "cannot be split into work units" in result.stderr


def test_the_default_budget_never_refuses_a_trace_and_notes_the_overrun(small_model, trace, monkeypatch):
    estimate = estimate_of(trace)
    monkeypatch.setattr(read, "default_budget_bytes", lambda: estimate.smallest_budget_bytes - 1)
    notes: list[str] = []
    got = read_in_units(trace, ScaleOptions(note=notes.append), window_s=1.0, max_bad_fraction=1.0)
    assert got is not None and got.requests.height > 0
    assert len(notes) == 1 and str(trace) in notes[0] and "default memory budget" in notes[0]


def test_the_default_budget_is_quiet_when_the_trace_fits(small_model, trace, monkeypatch):
    estimate = estimate_of(trace)
    monkeypatch.setattr(read, "default_budget_bytes", lambda: estimate.smallest_budget_bytes)
    notes: list[str] = []
    read_in_units(trace, ScaleOptions(note=notes.append), window_s=1.0, max_bad_fraction=1.0)
    assert notes == []


def test_a_batch_tells_each_traces_notes_but_keeps_them_out_of_its_files(small_model, trace, monkeypatch, tmp_path, run_cli):
    """`report` runs each trace with its own note list (ScaleOptions.note): the entry carries the
    notes, the command prints them on stderr, and no page, index or summary holds them (the files
    do not depend on the budget)."""
    from coherence_diag.reports import build_reports

    estimate = estimate_of(trace)
    monkeypatch.setattr(read, "default_budget_bytes", lambda: estimate.smallest_budget_bytes - 1)
    result = build_reports([str(trace)], tmp_path / "lib", jobs=1)
    (entry,) = result.entries
    assert entry.report is not None and len(entry.notes) == 1 and "default memory budget" in entry.notes[0]
    for path in (tmp_path / "lib").iterdir():
        assert "memory budget" not in path.read_text(), path.name
    shown = run_cli("report", trace, "--out", tmp_path / "cli", "--jobs", "1", "--no-progress")
    assert shown.exit_code == 0 and f"note: {entry.notes[0]}" in " ".join(shown.stderr.split())
