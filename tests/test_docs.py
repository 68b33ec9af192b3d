"""Documentation stays true to the code: generated pages are current, every column and metric
the tool produces is documented."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import typer

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


def choices(param) -> tuple[str, ...]:
    """The values an option accepts when they are a closed set (a Literal or an Enum), else ()."""
    import enum
    import typing

    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for arg in (annotation, *typing.get_args(annotation)):  # `X | None` too
        if typing.get_origin(arg) is typing.Literal:
            return tuple(str(a) for a in typing.get_args(arg))
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return tuple(str(m.value) for m in arg)
    return ()


def undocumented(app, readme: str) -> list[str]:
    r"""Every command without a README section (`### \`coherence-diag NAME ...\``), and every
    option (long form) or --format choice of a command that its section does not mention."""
    import re

    import typer

    sections = [s for s in re.split(r"(?m)^### ", readme) if s.startswith("`coherence-diag ")]
    missing = []
    for name, command in _commands(typer.main.get_command(app)):
        section = next((s for s in sections if f"coherence-diag {name}" in s.splitlines()[0]), None)
        if section is None:
            missing.append(f"{name}: no README section")
            continue
        for param in command.params:
            missing += [f"{name} {o}" for o in (*param.opts, *param.secondary_opts) if o.startswith("--") and o not in section]
            if "--format" in param.opts:
                missing += [f"{name} --format {c}" for c in choices(param) if not re.search(rf"\b{c}\b", section)]
    return missing


def test_every_command_and_option_is_documented_in_its_readme_section():
    from coherence_diag.cli import app

    missing = undocumented(app, (REPO / "README.md").read_text())
    assert not missing, missing


def test_an_undocumented_option_or_command_is_caught():
    demo = typer.Typer()

    @demo.command()
    def one(
        fast: Annotated[bool, typer.Option("--fast/--slow")] = False,
        fmt: Annotated[Literal["text", "html"], typer.Option("--format")] = "text",
    ) -> None:
        """One."""

    @demo.command()
    def two() -> None:
        """Two."""

    readme = "# demo\n\n### `coherence-diag one`\n\n`--fast` and `--format text`\n"
    assert undocumented(demo, readme) == ["one --slow", "one --format html", "two: no README section"]
