"""Markdown building blocks shared by the Markdown outputs (compare, gate).

Every string that may come from a trace (pool, device, env, rule summaries) goes through
`escape`: Markdown and inline HTML in a trace must render as text, never as markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

# Characters with a meaning inside GitHub-flavoured Markdown text (tables, emphasis, links, code);
# `-` and `.` only matter at the start of a line, which trace text never is here.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def escape(text: object) -> str:
    """`text` as literal Markdown: HTML-escaped, Markdown punctuation backslash-escaped, one line."""
    # quote=False: &#x27; would carry a "#" that the next step escapes, breaking the entity;
    # quotes mean nothing in Markdown text.
    s = html.escape(str(text), quote=False)
    s = _SPECIAL.sub(r"\\\1", s)
    return " ".join(s.splitlines())


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; cells are escaped, `align` is 'l' or 'r' per column."""
    align = align or ["l"] * len(headers)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(escape(h) for h in headers) + " |",
        "| " + " | ".join(marks[a] for a in align) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(escape(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
