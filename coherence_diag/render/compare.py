"""Renderings of a `Comparison`: terminal (Rich), Markdown and JSON.

All three show the same things in the same order: the two sides, a verdict, the before/after
table (seed 004 §8.1 style: every metric of the report contract, then the indices), the
distribution-shift tests, findings new / resolved / persisting, and findings about the pair.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.table import Table

from coherence_diag import units
from coherence_diag.model import Comparison, MeasureChange, Shift
from coherence_diag.render import json_report
from coherence_diag.render.markdown import escape as md_escape
from coherence_diag.render.markdown import table as md_table
from coherence_diag.render.style import SEVERITY_STYLE

_CHANGE_STYLE = {"better": "green", "worse": "red", "unchanged": "dim", "changed": "yellow", "within noise": "dim", "n/a": "dim"}


def _measure_cells(m: MeasureChange) -> list[str]:
    """Base, candidate, delta and relative change of a measure, in its unit."""
    return [units.display(m.base, m.unit), units.display(m.candidate, m.unit), units.delta(m.delta, m.unit), units.relative(m.relative_change)]


def shift_verdict(s: Shift) -> str:
    if s.significant is None:
        return "not tested (too few matched requests)"
    if not s.significant:
        return "no significant shift"
    return f"shifted {s.direction}"


def verdict(c: Comparison) -> str:
    """One sentence: how many measures got worse/better, which distributions shifted, findings."""
    judged = [m for m in c.measures if m.change in ("better", "worse", "unchanged", "within noise")]
    worse = sum(m.change == "worse" for m in judged)
    better = sum(m.change == "better" for m in judged)
    parts = [f"candidate worse on {worse} and better on {better} of {len(judged)} comparable measures"]
    shifted = [f"{s.description} {s.direction} (KS {s.ks_stat:.2f})" for s in c.significant_shifts if s.ks_stat is not None]
    parts.append("distributions shifted: " + ", ".join(shifted) if shifted else "no significant distribution shift")
    new = sum(f.status == "new" for f in c.findings)
    resolved = sum(f.status == "resolved" for f in c.findings)
    parts.append(f"{new} new and {resolved} resolved finding(s)")
    if c.pair_findings:
        parts.append("pair: " + ", ".join(f"{f.rule} ({f.severity})" for f in c.pair_findings))
    return "; ".join(parts)


def _side_line(side: Any) -> str:
    return f"{side.label}: {side.requests:,} requests, {side.rows:,} rows, {side.start or '?'} -> {side.end or '?'}"


def _matching_note(c: Comparison) -> str:
    s = next((s for s in c.shifts if s.signal == "latency_ms"), None)
    if s is None or not s.matched:
        return "unmatched (no token counts on both sides): a different request mix can look like a slower side"
    return (
        f"workload-matched on {', '.join(s.token_columns)} bands ({s.cells} cells; "
        f"request-mix distance before matching {units.number(s.mix_distance, '.3f')})"
    )


# One row per statistic, one column per signal: three signals fit any terminal width.
_SHIFT_ROWS: tuple[tuple[str, object], ...] = (
    ("matched requests per side", lambda s: units.number(s.n_matched, ",.0f")),
    ("KS distance (p)", lambda s: f"{units.number(s.ks_stat)} ({units.p_value(s.ks_p)})"),
    ("Anderson-Darling (p)", lambda s: f"{units.number(s.ad_stat, '.1f')} ({units.clipped_p_value(s.ad_p)})"),
    ("Mann-Whitney p", lambda s: units.p_value(s.mw_p)),
    ("P(candidate slower)", lambda s: units.number(s.mw_effect)),
    ("Wasserstein distance", lambda s: units.display(s.wasserstein_ms, "ms")),
    ("p50 base -> candidate", lambda s: f"{units.display(s.p50_base, 'ms')} -> {units.display(s.p50_candidate, 'ms')}"),
    ("p99 base -> candidate", lambda s: f"{units.display(s.p99_base, 'ms')} -> {units.display(s.p99_candidate, 'ms')}"),
    ("p99 ratio (unmatched)", lambda s: f"{units.number(s.p99_ratio, '.2f')} ({units.number(s.raw_p99_ratio, '.2f')})"),
    ("tail ratio p99/p50 base -> candidate", lambda s: f"{units.number(s.tail_ratio_base, '.1f')} -> {units.number(s.tail_ratio_candidate, '.1f')}"),
    ("SLO violations base -> candidate", lambda s: f"{units.percent(s.slo_violation_base)} -> {units.percent(s.slo_violation_candidate)}"),
    ("SLO-violation elasticity", lambda s: units.number(s.slo_elasticity, ".2f")),
    ("verdict", shift_verdict),
)


def shift_rows(c: Comparison) -> list[list[str]]:
    return [[label] + [str(cell(s)) for s in c.shifts] for label, cell in _SHIFT_ROWS]  # type: ignore[operator]


# ---------------------------------------------------------------- terminal


def render_terminal(c: Comparison, console: Console) -> None:
    console.print(
        Panel(
            "\n".join(
                [
                    "[bold]base[/bold]      " + rich_escape(_side_line(c.base)),
                    "[bold]candidate[/bold] " + rich_escape(_side_line(c.candidate)),
                    "[bold]verdict[/bold]   " + rich_escape(verdict(c)),
                ]
            ),
            title="compare",
            expand=False,
        )
    )
    table = Table(title="before / after", title_justify="left")
    for col, justify in (("metric", "left"), ("base", "right"), ("candidate", "right"), ("delta", "right"), ("change", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    group = None
    for m in c.measures:
        current = "indices" if m.unit == "index" else "metrics"
        if group is not None and current != group:
            table.add_section()
        group = current
        style = _CHANGE_STYLE[m.change]
        table.add_row(m.label, *_measure_cells(m), f"[{style}]{m.change}[/{style}]")
    console.print(table)

    if c.components:
        console.print(_components_table(c))

    shifts = Table(title="distribution shift, " + rich_escape(_matching_note(c)), title_justify="left")
    shifts.add_column("")
    for s in c.shifts:
        shifts.add_column(s.description, justify="right")
    rows = shift_rows(c)
    for row in rows[:-1]:
        shifts.add_row(*row)
    styled = [
        f"[{'red' if s.direction == 'slower' else 'green' if s.significant else 'dim'}]{text}[/]"
        for s, text in zip(c.shifts, rows[-1][1:])
    ]
    shifts.add_row(rows[-1][0], *styled)
    console.print(shifts)
    console.print(f"[dim]significant = KS p < {c.alpha:g} and KS distance >= {c.min_ks:g}; AD p is clipped by scipy to [0.001, 0.25][/dim]")

    if c.findings:
        findings = Table(title="findings", title_justify="left")
        for col in ("status", "rule", "domain", "severity base -> candidate", "summary"):
            findings.add_column(col, no_wrap=col == "rule")
        for f in c.findings:
            sev = f"{f.severity_base or '-'} -> {f.severity_candidate or '-'}"
            findings.add_row(f.status, f.rule, f.domain, sev, rich_escape(f.summary))
        console.print(findings)
    else:
        console.print("[green]no findings on either side[/green]")

    for pair in c.pair_findings:
        style = SEVERITY_STYLE[pair.severity]
        evidence = "\n".join(f"  {rich_escape(e.name)}: {rich_escape(units.evidence(e.value, e.unit))}" for e in pair.evidence.entries)
        console.print(
            Panel(
                f"[{style}]{pair.severity}[/{style}] {pair.rule} ({pair.domain}) score {pair.score:.2f}\n"
                f"{rich_escape(pair.summary)}\n[dim]evidence[/dim]\n{evidence}",
                title="across the two sides",
                expand=False,
            )
        )


def _component_rows(c: Comparison) -> list[list[str]]:
    rows = []
    for comp in c.components:
        if comp.base is None and comp.candidate is None:
            continue
        where = {"layer": "CI layer", "link": "CI link", "pool": "pool"}[comp.kind]
        moved = "n/a" if comp.delta is None else f"{comp.delta:+.3f}"
        if comp.delta is not None and abs(comp.delta) >= 0.05:
            worse = (comp.delta < 0) if comp.better == "higher" else (comp.delta > 0)
            moved += " worse" if worse else " better"
        rows.append([where, comp.name, units.number(comp.base), units.number(comp.candidate), moved])
    return rows


def _components_table(c: Comparison) -> Table:
    table = Table(title="synchronization map and pools (moves of 0.05 or more are marked)", title_justify="left")
    for col, justify in (("", "left"), ("component", "left"), ("base", "right"), ("candidate", "right"), ("delta", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in _component_rows(c):
        style = "red" if row[-1].endswith("worse") else ("green" if row[-1].endswith("better") else "")
        row[1] = rich_escape(row[1])  # pool names come from the trace
        table.add_row(*row[:-1], f"[{style}]{row[-1]}[/{style}]" if style else row[-1])
    return table


# ---------------------------------------------------------------- markdown


def render_markdown(c: Comparison) -> str:
    out = [
        "## coherence-diag compare\n",
        f"- **base**: {md_escape(_side_line(c.base))}",
        f"- **candidate**: {md_escape(_side_line(c.candidate))}",
        f"- **verdict**: {md_escape(verdict(c))}\n",
        "### Before / after\n",
        md_table(
            ["Metric", "Base", "Candidate", "Delta", "Change", ""],
            ([m.label, *_measure_cells(m), m.change] for m in c.measures),
            "lrrrrl",
        ),
        "### Synchronization map and pools\n",
        md_table(["", "Component", "Base", "Candidate", "Delta"], _component_rows(c), "llrrr"),
        f"### Distribution shift\n\n{md_escape(_matching_note(c))}. Significant = KS p < {c.alpha:g} "
        f"and KS distance >= {c.min_ks:g}.\n",
        md_table(["", *(s.description for s in c.shifts)], shift_rows(c), "l" + "r" * len(c.shifts)),
        "### Findings\n",
    ]
    if c.findings:
        out.append(
            md_table(
                ["Status", "Rule", "Domain", "Severity (base -> candidate)", "Summary"],
                ([f.status, f.rule, f.domain, f"{f.severity_base or '-'} -> {f.severity_candidate or '-'}", f.summary] for f in c.findings),
            )
        )
    else:
        out.append("No findings on either side.\n")
    if c.pair_findings:
        out.append("### Across the two sides\n")
        for f in c.pair_findings:
            out.append(f"- **{md_escape(f.rule)}** ({md_escape(f.domain)}, {f.severity}, score {f.score:.2f}): {md_escape(f.summary)}")
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- json


def comparison_to_dict(c: Comparison) -> dict[str, Any]:
    raw = dataclasses.asdict(c)
    raw["pair_findings"] = [json_report.finding_to_dict(f) for f in c.pair_findings]
    return {
        "schema_version": raw.pop("schema_version"),
        "kind": "comparison",
        "tool": {"name": "coherence-diag", "version": raw.pop("tool_version")},
        "verdict": verdict(c),
        **raw,
    }


def render_json(c: Comparison) -> str:
    return json_report.dumps(comparison_to_dict(c))


def schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package for `compare --format json`."""
    return json_report.load_schema("comparison-v1.schema.json")
