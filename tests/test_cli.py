"""The command line: documented, helpful, contract exit codes, JSON that validates."""

from __future__ import annotations

import json

import jsonschema
import pytest
import typer.main

from coherence_diag import __version__
from coherence_diag.cli import app
from coherence_diag.render.json_report import schema
from tests.conftest import REPO


def _commands() -> list[str]:
    """Every command path, sub-commands included (e.g. 'rules list')."""

    def walk(cmd, prefix):
        if hasattr(cmd, "commands"):  # a group (typer may use its own click classes)
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*prefix, name])
        else:
            yield " ".join(prefix)

    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_help_and_is_documented_in_readme(run_cli):
    readme = (REPO / "README.md").read_text()
    commands = _commands()
    assert {"analyze", "simulate", "explain", "rules list", "rules check"} <= set(commands)
    for name in commands:
        result = run_cli(*name.split(), "--help")
        assert result.exit_code == 0
        assert "Usage" in result.stdout
        assert result.stdout.count("\n") > 3  # a description and options, not a bare usage line
        assert f"coherence-diag {name}" in readme, f"README does not document `{name}`"


def test_version(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"coherence-diag {__version__}"


def test_json_report_validates_against_shipped_schema(run_cli, trace_file):
    result = run_cli("analyze", trace_file, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema())
    assert report["schema_version"] == "1"
    assert set(report["indices"]) == {"CI", "DI", "WPI", "HCL"}


def test_terminal_report_to_file(run_cli, trace_file, tmp_path):
    out = tmp_path / "report.txt"
    result = run_cli("analyze", trace_file, "--output", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for section in ("trace", "metrics", "coherence indices", "findings", "what this trace cannot tell you"):
        assert section in text


def test_terminal_report_to_stdout(run_cli, trace_file):
    result = run_cli("analyze", trace_file)
    assert result.exit_code == 0
    assert "end-to-end latency" in result.stdout


def test_bad_usage_exits_2(run_cli, trace_file):
    assert run_cli("analyze").exit_code == 2
    assert run_cli("analyze", trace_file, "--format", "yaml").exit_code == 2
    assert run_cli("analyze", trace_file, "--window", "0").exit_code == 2
    assert run_cli("no-such-command").exit_code == 2


def test_internal_error_exits_3_without_traceback(run_cli, trace_file, monkeypatch):
    import coherence_diag.analysis as analysis

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(analysis, "analyze", boom)
    result = run_cli("analyze", trace_file)
    assert result.exit_code == 3
    assert "internal error" in result.stderr and "kaboom" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("window", ["0.25", "10"])
def test_window_option(run_cli, trace_file, window):
    result = run_cli("analyze", trace_file, "--format", "json", "--window", window)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["window_s"] == float(window)


def test_shared_option_defaults_are_the_library_defaults():
    """The CLI declares --window and --max-bad-fraction once, without importing Polars for --help."""
    from coherence_diag import cli
    from coherence_diag.timeseries import DEFAULT_WINDOW_S
    from coherence_diag.validate import DEFAULT_MAX_BAD_FRACTION

    assert cli.DEFAULT_WINDOW_S == DEFAULT_WINDOW_S
    assert cli.DEFAULT_MAX_BAD_FRACTION == DEFAULT_MAX_BAD_FRACTION
