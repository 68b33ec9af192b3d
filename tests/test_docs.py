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


def _commands(command, path=()):
    """(name, command) of every leaf command of the CLI, e.g. ('rules score', <command>)."""
    if hasattr(command, "commands"):  # a group (Typer vendors its own click classes)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_and_option_is_documented_in_its_readme_section():
    import re

    import typer

    from coherence_diag.cli import app

    sections = [s for s in re.split(r"(?m)^### ", (REPO / "README.md").read_text()) if s.startswith("`coherence-diag ")]
    missing = []
    for name, command in _commands(typer.main.get_command(app)):
        section = next((s for s in sections if f"coherence-diag {name}" in s.splitlines()[0]), None)
        if section is None:
            missing.append(f"{name}: no README section")
            continue
        options = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        missing += [f"{name} {o}" for o in options if o not in section]
    assert not missing, missing
