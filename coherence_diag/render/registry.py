"""Every renderer, by subject and format: the one table the CLI (and any caller) renders through.

A subject is a result of the model (`coherence_diag.model`, plus the score and the rule
explanation): "report", "comparison", "gate", "score", "explanation"; and the two subjects of
`coherence-diag report`: "page" (one trace's HTML page: render/html.py's `TracePage`, its
entry and charts) and "batch" (`batch.Batch`: the index as HTML, summary.json as JSON).
A renderer either returns text (JSON, Markdown, JUnit, HTML: `render(value, *extra) -> str`) or draws onto a Rich console
(the terminal views: `render(value, console, *extra) -> None`). `extra` is what the subject's
renderers all take after the value: the accuracy gate of a score, the trace path of an
explanation.

Adding an output format is one module and one line in `_RENDERERS`; a `listed` format becomes a
choice of the command's `--format` option (and must be documented in its README section:
tests/test_docs.py). Renderers are imported on first use, so the table costs nothing at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Subject = Literal["report", "comparison", "gate", "score", "explanation", "page", "batch"]


@dataclass(frozen=True)
class Renderer:
    subject: Subject
    format: str
    target: str  # "module:function"
    console: bool = False  # True: draws onto a Rich console; False: returns text
    listed: bool = True  # offered by the command's --format option (JUnit has its own option; `report` writes files)

    def load(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        function: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return function


_RENDERERS: tuple[Renderer, ...] = (
    Renderer("report", "terminal", "coherence_diag.render.terminal:render", console=True),
    Renderer("report", "json", "coherence_diag.render.json_report:render"),
    Renderer("comparison", "terminal", "coherence_diag.render.compare:render_terminal", console=True),
    Renderer("comparison", "json", "coherence_diag.render.compare:render_json"),
    Renderer("comparison", "markdown", "coherence_diag.render.compare:render_markdown"),
    Renderer("gate", "terminal", "coherence_diag.render.gate:render_terminal", console=True),
    Renderer("gate", "json", "coherence_diag.render.gate:render_json"),
    Renderer("gate", "markdown", "coherence_diag.render.gate:render_markdown"),
    Renderer("gate", "junit", "coherence_diag.render.gate:render_junit", listed=False),
    Renderer("score", "terminal", "coherence_diag.render.score:render_terminal", console=True),
    Renderer("score", "json", "coherence_diag.render.score:render_json"),
    Renderer("score", "markdown", "coherence_diag.render.score:render_markdown"),
    Renderer("explanation", "terminal", "coherence_diag.render.explain:render_terminal", console=True),
    Renderer("explanation", "json", "coherence_diag.render.explain:render_json"),
    # `coherence-diag report` writes these files itself (no --format to choose them).
    Renderer("page", "html", "coherence_diag.render.html:render_page", listed=False),
    Renderer("batch", "html", "coherence_diag.render.html:render_index", listed=False),
    Renderer("batch", "json", "coherence_diag.render.summary:render_summary", listed=False),
)

RENDERERS: dict[tuple[str, str], Renderer] = {(r.subject, r.format): r for r in _RENDERERS}
if len(RENDERERS) != len(_RENDERERS):
    raise RuntimeError("render/registry.py: a (subject, format) is registered twice")


def get(subject: Subject, format: str) -> Renderer:
    try:
        return RENDERERS[(subject, format)]
    except KeyError:
        known = ", ".join(formats(subject, listed_only=False)) or "none"
        raise ValueError(f"no {format!r} renderer for {subject!r} (formats: {known})") from None


def formats(subject: Subject, *, listed_only: bool = True) -> tuple[str, ...]:
    """The formats of `subject`, in registration order (the first is the default)."""
    return tuple(r.format for r in _RENDERERS if r.subject == subject and (r.listed or not listed_only))


def render_text(subject: Subject, format: str, value: object, *extra: object) -> str:
    """The text of a text renderer (JSON, Markdown, ...)."""
    renderer = get(subject, format)
    if renderer.console:
        raise ValueError(f"the {format!r} renderer of {subject!r} draws onto a console; use draw()")
    text: str = renderer.load()(value, *extra)
    return text


def draw(subject: Subject, format: str, value: object, console: Any, *extra: object) -> None:
    """Draw `value` with a console renderer (the terminal views) onto a Rich console."""
    renderer = get(subject, format)
    if not renderer.console:
        raise ValueError(f"the {format!r} renderer of {subject!r} returns text; use render_text()")
    renderer.load()(value, console, *extra)
