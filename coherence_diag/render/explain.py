"""Outputs of `coherence-diag explain RULE --trace TRACE`: a Rich terminal view and JSON.

Both render the same `RuleExplanation` (coherence_diag/rules/explain.py); nothing is computed here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from coherence_diag import units
from coherence_diag.render.json_report import dumps
from coherence_diag.render.style import SEVERITY_STYLE
from coherence_diag.rules.explain import Clause, ClauseGroup, RuleExplanation

_HELD = {True: "[green]held[/green]", False: "[red]not held[/red]", None: "[yellow]undecided[/yellow]"}
_VERDICT_STYLE = {"condition-not-held": "green", "below-thresholds": "green", "not-evaluable": "yellow"}


# --- JSON -------------------------------------------------------------------------------------


def to_dict(e: RuleExplanation, trace: str) -> dict[str, Any]:
    return {
        "rule": e.rule,
        "title": e.title,
        "trace": trace,
        "verdict": e.verdict,
        "verdict_text": e.verdict_text,
        "summary": e.summary,
        "physics": e.physics,
        "evaluability": dataclasses.asdict(e.evaluability),
        "condition": {"source": e.condition, "held": e.condition_held, "clauses": _tree_dict(e.clauses)},
        "score": {
            "source": e.score,
            "combine": e.score_combine,
            "terms": [dataclasses.asdict(t) for t in e.score_terms],
            "signature_score": e.signature_score,
            "final_score": e.final_score,
            "severity": e.severity,
            "thresholds": e.severity_thresholds,
        },
        "confidence": e.confidence,
        "corroboration": [dataclasses.asdict(c) for c in e.corroboration],
        "undefined": [
            {"name": u.name, "role": u.role, **({"missing": list(u.missing)} if u.missing else {"reason": u.reason})}
            for u in e.undefined
        ],
        "estimated_inputs": list(e.estimated_inputs),
    }


def _tree_dict(part: ClauseGroup | Clause) -> dict[str, Any]:
    if isinstance(part, ClauseGroup):
        return {"op": part.op, "held": part.held, "parts": [_tree_dict(p) for p in part.parts]}
    out: dict[str, Any] = {"clause": part.source, "held": part.held, "features": part.features}
    if part.left is not None:
        out["left"] = {"source": part.left, "value": part.left_value}
    return out


def render_json(e: RuleExplanation, trace: str) -> str:
    return dumps(to_dict(e, trace))


# --- terminal ---------------------------------------------------------------------------------


def _value(value: float | None) -> str:
    return "[yellow]undefined[/yellow]" if value is None else units.magnitude(value)


def _readings(features: dict[str, float | None]) -> str:
    return ", ".join(f"{escape(n)} = {_value(v)}" for n, v in features.items())


def render_terminal(e: RuleExplanation, console: Console, trace: str) -> None:
    style = SEVERITY_STYLE.get(e.severity or "", _VERDICT_STYLE.get(e.verdict, ""))
    head = [
        f"[bold]{escape(e.rule)}[/bold]: {escape(e.title)}",
        f"trace {escape(trace)}",
        f"verdict: [{style}]{escape(e.verdict_text)}[/{style}]" if style else f"verdict: {escape(e.verdict_text)}",
    ]
    if e.summary:
        head.append(escape(e.summary))
    console.print(Panel("\n".join(head), title="explain", expand=False))
    if e.physics:
        console.print(Panel(escape(e.physics), title="physics", title_align="left", expand=False))
    console.print(_condition(e))
    console.print(_score(e))
    if e.corroboration:
        console.print(_corroboration(e))
    console.print(_undefined(e))
    if e.estimated_inputs:
        console.print("[bold]estimated inputs[/bold] (from weaker telemetry)")
        for line in e.estimated_inputs:
            console.print(f"  {escape(line)}")


def _condition(e: RuleExplanation) -> Table:
    table = Table(title=f"condition (signature): {_HELD[e.condition_held]}", title_justify="left", box=None, padding=(0, 1))
    table.add_column("clause", overflow="fold")
    table.add_column("", no_wrap=True)
    table.add_column("this trace", overflow="fold")

    def add(part: ClauseGroup | Clause, depth: int) -> None:
        indent = "  " * depth
        if isinstance(part, ClauseGroup):
            table.add_row(f"{indent}[bold]{'all' if part.op == 'and' else 'any'} of:[/bold]", _HELD[part.held], "")
            for p in part.parts:
                add(p, depth + 1)
            return
        values = _readings(part.features)
        if part.left is not None:
            values += f"; {escape(part.left)} = {_value(part.left_value)}"
        table.add_row(f"{indent}{escape(part.source)}", _HELD[part.held], values)

    add(e.clauses, 0)
    return table


def _score(e: RuleExplanation) -> Group:
    table = Table(title=f"score: {escape(e.score)}", title_justify="left", box=None, padding=(0, 1))
    table.add_column("", no_wrap=True)
    table.add_column("term", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("this trace", overflow="fold")
    for t in e.score_terms:
        op = t.op if e.score_combine in ("sum", "product") else ""
        table.add_row(op, escape(t.source), _value(t.value), _readings(t.features))
    if e.score_combine not in (None, "sum", "product"):
        table.caption = f"the score is {escape(e.score_combine or '')} of these"
        table.caption_justify = "left"
    thresholds = ", ".join(f"{k} >= {v:g}" for k, v in e.severity_thresholds.items())
    if e.signature_score is None:
        line = "not applied: " + ("the condition did not hold" if e.evaluability.evaluated else "the rule is not evaluable")
    else:
        line = f"signature score {e.signature_score:.3f} (clipped to [0, 1])"
        if e.final_score is not None and e.final_score != e.signature_score:
            line += f", with corroboration {e.final_score:.3f}"
        line += f" -> severity {e.severity or 'none'}"
    return Group(table, f"  {line}  [dim](thresholds: {thresholds})[/dim]")


def _corroboration(e: RuleExplanation) -> Table:
    title = "corroborating signals" + (f" (confidence {e.confidence:.2f})" if e.confidence is not None else "")
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1))
    table.add_column("weight", justify="right", no_wrap=True)
    table.add_column("measured", no_wrap=True)
    table.add_column("held", no_wrap=True)
    table.add_column("signal", overflow="fold")
    for c in e.corroboration:
        held = _HELD[c.held] if c.measured else "[dim]-[/dim]"
        measured = "yes" if c.measured else "[yellow]no[/yellow]"
        table.add_row(
            f"+{c.weight:g}", measured, held, f"{escape(c.when)}  [dim]({_readings(c.features)})[/dim]\n[dim]{escape(c.says)}[/dim]"
        )
    return table


def _undefined(e: RuleExplanation) -> Table | str:
    if not e.undefined:
        return "[bold]undefined features[/bold]: none (every feature the rule reads is defined in this trace)"
    table = Table(title="undefined features", title_justify="left", box=None, padding=(0, 1))
    table.add_column("why", overflow="fold", ratio=1)
    table.add_column("role", no_wrap=True)
    table.add_column("features", overflow="fold", ratio=1)
    groups: dict[str, dict[str, list[str]]] = {}  # one reason often leaves a whole family undefined
    for u in e.undefined:
        why = f"needs columns {', '.join(u.missing)}" if u.missing else (u.reason or "")
        groups.setdefault(why, {}).setdefault(u.role, []).append(u.name)
    for why, roles in groups.items():
        for i, (role, names) in enumerate(roles.items()):
            table.add_row(escape(why) if i == 0 else "", role, escape(", ".join(names)))
    return table
