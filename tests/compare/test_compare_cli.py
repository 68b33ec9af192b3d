"""`coherence-diag compare` on the command line: formats, exit codes, escaping, determinism."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.compare.conftest import SAMPLES

MIGRATION = SAMPLES / "migration-reconfiguration-risk.parquet"
HEALTHY = SAMPLES / "healthy.parquet"


def test_env_split_terminal_names_the_mode_and_the_table(run_cli):
    result = run_cli("compare", MIGRATION, "--env", "onprem", "--env", "cloud-a")
    assert result.exit_code == 0, result.stderr
    for text in ("before / after", "P99 latency", "distribution shift", "migration-reconfiguration-risk", "AI.20"):
        assert text in result.stdout


def test_json_is_deterministic_and_written_atomically(run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("compare", MIGRATION, "--format", "json", "--output", a).exit_code == 0
    assert run_cli("compare", MIGRATION, "--format", "json", "-o", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert [f["rule"] for f in doc["pair_findings"]] == ["migration-reconfiguration-risk"]
    assert sorted(tmp_path.iterdir()) == [a, b]  # no temporary files left behind


def test_markdown_before_after_table(run_cli):
    result = run_cli("compare", SAMPLES / "burst-amplification.parquet", HEALTHY, "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    assert "### Before / after" in result.stdout
    assert "| P99 latency |" in result.stdout
    assert "| resolved | burst-amplification |" in result.stdout.replace("burst\\-amplification", "burst-amplification")


@pytest.mark.parametrize(
    "args, problem",
    [
        (["compare", HEALTHY], "exactly two `env` values"),
        (["compare", MIGRATION, "--env", "onprem"], "exactly twice"),
        (["compare", MIGRATION, "--env", "onprem", "--env", "mars"], "no rows with env 'mars'"),
        (["compare", MIGRATION, "--env", "onprem", "--env", "onprem"], "two different env values"),
        (["compare", HEALTHY, HEALTHY, "--env", "onprem"], "with two traces, give no --env"),
        (["compare", HEALTHY, "missing.parquet"], "missing.parquet"),
    ],
)
def test_bad_usage_exits_2_with_one_message(run_cli, tmp_path, args, problem):
    out = tmp_path / "out.json"
    result = run_cli(*args, "--format", "json", "--output", out)
    assert result.exit_code == 2
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_refuses_to_write_over_an_input(run_cli, tmp_path):
    copy = tmp_path / "t.parquet"
    copy.write_bytes(HEALTHY.read_bytes())
    before = copy.read_bytes()
    result = run_cli("compare", HEALTHY, copy, "-o", copy)
    assert result.exit_code == 2 and copy.read_bytes() == before


def test_markdown_escapes_trace_derived_names(run_cli, tmp_path):
    hostile = "<img src=x onerror=alert(1)>|**x**"
    path = tmp_path / "hostile.parquet"
    pl.read_parquet(MIGRATION).with_columns(pl.col("env").replace("cloud-a", hostile)).write_parquet(path)
    result = run_cli("compare", path, "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    assert "<img" not in result.stdout
    assert "&lt;img" in result.stdout
    # A table row is never broken by a `|` from the trace.
    for line in result.stdout.splitlines():
        if "onerror" in line and line.startswith("|"):
            assert "\\|" in line


def test_terminal_shows_rich_markup_in_names_literally(run_cli, tmp_path):
    path = tmp_path / "markup.parquet"
    frame = pl.read_parquet(MIGRATION)
    frame = frame.with_columns(pl.col("env").replace("cloud-a", "[red]cloud[/red]"), pl.col("pool").replace("decode-l40s", "[bold]l40s[/bold]"))
    frame.write_parquet(path)
    result = run_cli("compare", path)
    assert result.exit_code == 0, result.stderr
    assert "[env=[red]cloud[/red]]" in result.stdout.replace("\n", "")
    assert "[bold]l40s[/bold].HCL" in result.stdout


def test_progress_names_each_side_and_step():
    from coherence_diag.compare import compare_envs, compare_traces

    steps: list[str] = []
    compare_traces(HEALTHY, HEALTHY, progress=steps.append)
    assert steps[0] == "base: reading and validating trace" and steps[-1] == "comparing"
    assert "candidate: computing features and indices" in steps
    steps.clear()
    compare_envs(MIGRATION, progress=steps.append)
    assert any(s.startswith("env onprem: ") for s in steps) and steps[-1] == "comparing"


def test_no_progress_option_is_accepted(run_cli):
    result = run_cli("compare", HEALTHY, HEALTHY, "--format", "json", "--no-progress")
    assert result.exit_code == 0, result.output
