"""Renderings of a `Comparison`: terminal (Rich), Markdown and JSON.

All three show the same things in the same order: the two sides, a verdict, the before/after
table (seed 004 §8.1 style: every metric of the report contract, then the indices), the
distribution-shift tests, findings new / resolved / persisting, and findings about the pair.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.table import Table

from coherence_diag.compare import Comparison, MeasureChange, Shift
from coherence_diag.render import json_report
from coherence_diag.render.markdown import escape as md_escape
from coherence_diag.render.markdown import table as md_table

_CHANGE_STYLE = {"better": "green", "worse": "red", "unchanged": "dim", "changed": "yellow", "within noise": "dim", "n/a": "dim"}
_SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


# ---------------------------------------------------------------- numbers as text (no markup)


def value_text(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:,.1f} ms"
    if unit == "frac":
        return f"{value:.1%}"
    if unit == "rps":
        return f"{value:,.2f} rps"
    return f"{value:.3f}"


def delta_text(m: MeasureChange) -> str:
    if m.delta is None:
        return "n/a"
    if m.unit == "frac":
        return f"{m.delta * 100:+.1f} pp"
    if m.unit == "ms":
        return f"{m.delta:+,.0f} ms" if abs(m.delta) >= 100 else f"{m.delta:+,.1f} ms"
    if m.unit == "rps":
        return f"{m.delta:+,.2f} rps"
    return f"{m.delta:+.3f}"


def relative_text(m: MeasureChange) -> str:
    return "n/a" if m.relative_change is None else f"{m.relative_change:+.1%}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _ad_p(p: float | None) -> str:
    """scipy clips the Anderson-Darling p-value to [0.001, 0.25]: say so at the clips."""
    if p is None:
        return "n/a"
    return "<=0.001" if p <= 0.001 else (">=0.25" if p >= 0.25 else f"{p:.3f}")


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


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
        f"request-mix distance before matching {_num(s.mix_distance, '.3f')})"
    )


def _ms(x: float | None) -> str:
    return value_text(x, "ms")


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pp"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


# One row per statistic, one column per signal: three signals fit any terminal width.
_SHIFT_ROWS: tuple[tuple[str, object], ...] = (
    ("matched requests per side", lambda s: _num(s.n_matched, ",.0f")),
    ("KS distance (p)", lambda s: f"{_num(s.ks_stat)} ({_p(s.ks_p)})"),
    ("Anderson-Darling (p)", lambda s: f"{_num(s.ad_stat, '.1f')} ({_ad_p(s.ad_p)})"),
    ("Mann-Whitney p", lambda s: _p(s.mw_p)),
    ("P(candidate slower)", lambda s: _num(s.mw_effect)),
    ("Wasserstein distance", lambda s: _ms(s.wasserstein_ms)),
    ("p50 base -> candidate", lambda s: f"{_ms(s.p50_base)} -> {_ms(s.p50_candidate)}"),
    ("p99 base -> candidate", lambda s: f"{_ms(s.p99_base)} -> {_ms(s.p99_candidate)}"),
    ("p99 ratio (unmatched)", lambda s: f"{_num(s.p99_ratio, '.2f')} ({_num(s.raw_p99_ratio, '.2f')})"),
    ("tail ratio p99/p50 base -> candidate", lambda s: f"{_num(s.tail_ratio_base, '.1f')} -> {_num(s.tail_ratio_candidate, '.1f')}"),
    ("SLO violations base -> candidate", lambda s: f"{_pct(s.slo_violation_base)} -> {_pct(s.slo_violation_candidate)}"),
    ("SLO-violation elasticity", lambda s: _num(s.slo_elasticity, ".2f")),
    ("verdict", shift_verdict),
)


def _shift_rows(c: Comparison) -> list[list[str]]:
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
        table.add_row(
            m.label, value_text(m.base, m.unit), value_text(m.candidate, m.unit), delta_text(m), relative_text(m), f"[{style}]{m.change}[/{style}]"
        )
    console.print(table)

    if c.components:
        console.print(_components_table(c))

    shifts = Table(title="distribution shift, " + rich_escape(_matching_note(c)), title_justify="left")
    shifts.add_column("")
    for s in c.shifts:
        shifts.add_column(s.description, justify="right")
    rows = _shift_rows(c)
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

    for f in c.pair_findings:
        style = _SEVERITY_STYLE[f.severity]
        evidence = "\n".join(f"  {rich_escape(str(k))}: {rich_escape(_evidence_text(v))}" for k, v in f.evidence.items())
        console.print(
            Panel(
                f"[{style}]{f.severity}[/{style}] {f.rule} ({f.domain}) score {f.score:.2f}\n{rich_escape(f.summary)}\n[dim]evidence[/dim]\n{evidence}",
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
        rows.append([where, comp.name, _num(comp.base), _num(comp.candidate), moved])
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


def _evidence_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


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
            ([m.label, value_text(m.base, m.unit), value_text(m.candidate, m.unit), delta_text(m), relative_text(m), m.change] for m in c.measures),
            "lrrrrl",
        ),
        "### Synchronization map and pools\n",
        md_table(["", "Component", "Base", "Candidate", "Delta"], _component_rows(c), "llrrr"),
        f"### Distribution shift\n\n{md_escape(_matching_note(c))}. Significant = KS p < {c.alpha:g} "
        f"and KS distance >= {c.min_ks:g}.\n",
        md_table(["", *(s.description for s in c.shifts)], _shift_rows(c), "l" + "r" * len(c.shifts)),
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
    text = resources.files("coherence_diag.schemas").joinpath("comparison-v1.schema.json").read_text("utf-8")
    return json.loads(text)
