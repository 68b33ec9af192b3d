"""render/registry.py: every renderer is reachable by (subject, format), and the CLI offers
exactly the listed formats of each subject."""

from __future__ import annotations

import io
import json

import pytest
import typer.main
from rich.console import Console

from coherence_diag import analyze
from coherence_diag.cli import app, emit
from coherence_diag.gate import evaluate, load_policy
from coherence_diag.render import registry
from tests.conftest import REPO
from tests.test_docs import choices

COMMAND_OF = {"report": "analyze", "comparison": "compare", "gate": "gate", "score": "rules score", "explanation": "explain"}


def test_every_registered_renderer_loads():
    for renderer in registry.RENDERERS.values():
        assert callable(renderer.load()), renderer


def _format_choices(command_path: str) -> tuple[str, ...]:
    command = typer.main.get_command(app)
    for name in command_path.split():
        command = command.commands[name]  # type: ignore[attr-defined]
    return choices(next(p for p in command.params if "--format" in p.opts))


@pytest.mark.parametrize("subject", sorted(COMMAND_OF))
def test_cli_format_choices_are_the_listed_formats(subject):
    assert _format_choices(COMMAND_OF[subject]) == registry.formats(subject)
    assert registry.formats(subject)[0] == "terminal"  # the default


def test_unknown_format_and_wrong_kind_are_refused():
    with pytest.raises(ValueError, match="no 'html' renderer"):
        registry.get("report", "html")
    with pytest.raises(ValueError, match="draws onto a console"):
        registry.render_text("report", "terminal", object())


def test_report_and_gate_render_in_every_format(tmp_path):
    report = analyze(REPO / "sample_traces" / "burst-amplification.parquet").report
    gate = evaluate(load_policy(REPO / "policies" / "serving-default.yaml"), report)
    for subject, value in (("report", report), ("gate", gate)):
        for fmt in registry.formats(subject, listed_only=False):
            renderer = registry.get(subject, fmt)
            if renderer.console:
                out = io.StringIO()
                registry.draw(subject, fmt, value, Console(file=out, width=120))
                text = out.getvalue()
            else:
                text = registry.render_text(subject, fmt, value)
            assert text.strip(), (subject, fmt)
    json.loads(registry.render_text("report", "json", report))
    target = tmp_path / "view.txt"
    emit("report", "terminal", report, target)  # a terminal view into a file: plain text, no escapes
    assert "burst-amplification" in target.read_text() and "\x1b[" not in target.read_text()


def test_subjects_without_a_format_option_offer_no_format():
    """`report` writes its page, index and summary itself: their renderers are not --format choices."""
    for subject in {r.subject for r in registry.RENDERERS.values()} - set(COMMAND_OF):
        assert registry.formats(subject) == (), subject
        assert registry.formats(subject, listed_only=False), subject
