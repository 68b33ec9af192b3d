"""Self-contained offline HTML: one page per trace and the index of a batch (`coherence-diag report`).

Registered in render/registry.py: subject "page" (a `TracePage`: one trace's entry and its
charts) and subject "batch" (a `batch.Batch`: the index; summary.json is render/summary.py).
Pages render the same models as every other output (`batch.TraceEntry`: its `Report`,
`Comparison`, `GateResult`; the visuals' tables); the templates only lay them out, and every
number reads through coherence_diag.units. Everything that shapes what is shown (which
evidence is a table, which chart supports which finding, the Content-Security-Policy) is
decided here in Python.

Safety: Jinja2 autoescapes every value, so a trace-derived string (a device, pool or env name,
a path) is text, never markup. The only unescaped input is a chart's SVG (`ChartSection.svg`),
which its producer (render/charts.py) checks against an allowlist before it gets here. Each
page carries a Content-Security-Policy meta tag: `default-src 'none'` and the sha256 of each
inline stylesheet and script it ships, so the page can make no request of any kind.

Determinism: no clock, no random ids, no absolute paths the caller did not give; the same
entry gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from coherence_diag import __version__, units
from coherence_diag.batch import VERDICTS, Batch, TraceEntry, verdict_counts
from coherence_diag.model import COLUMN_STATUSES, Comparison, Finding, MeasureChange, Provenance, Report, Visual
from coherence_diag.render.compare import shift_rows, verdict
from coherence_diag.render.provenance_text import ABSENT_MEANING, column_how, summary_line

MAX_EVIDENCE_ROWS = 20  # rows of one evidence table shown in the page; all are in the JSON report
MAX_SUMMARY_ROWS = 20  # metric summaries shown per source; all are in the JSON report


@dataclass(frozen=True)
class ChartSection:
    """One chart of a trace's page: an inline SVG with the numbers behind it, or why it is omitted.

    `svg` must already be checked (an allowlist of SVG elements and attributes, no script, no
    external reference): it is embedded as is. `styles` lists the text of each `<style>` element
    inside it, so that the page's Content-Security-Policy allows exactly those (the charts of
    render/charts.py have none: they style with presentation attributes only).
    """

    id: str  # unique within the page, [a-z0-9-]: the anchor #chart-<id>
    title: str
    caption: str  # what to look at
    svg: str | None = None
    columns: tuple[str, ...] = ()  # the <details> table of the numbers behind the chart
    rows: tuple[tuple[str, ...], ...] = ()  # as text (units.cell)
    omitted_reason: str | None = None  # set instead of svg when the trace cannot support the chart
    rules: tuple[str, ...] = ()  # rule ids whose findings this chart supports
    styles: tuple[str, ...] = ()
    time_origin: str | None = None  # what t = 0 s of the time columns is (a UTC timestamp)
    episodes: tuple[tuple[str, ...], ...] = ()  # marked episodes: kind, start s, end s, what, finding

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.id):
            raise ValueError(f"chart id {self.id!r} is not of the form [a-z0-9-]+")
        if (self.svg is None) == (self.omitted_reason is None):
            raise ValueError(f"chart {self.id!r}: give either an svg or an omitted_reason")


def chart_sections(visuals: Sequence[Visual], svgs: Mapping[str, str]) -> tuple[ChartSection, ...]:
    """The page's chart sections: each defined visual with its SVG (from render/charts.py) and its
    table, each omitted one with its reason."""
    sections = []
    for v in visuals:
        if v.table is None:
            sections.append(ChartSection(v.id, v.title, v.caption, omitted_reason=v.omitted_reason, rules=v.supports_rules))
            continue
        if v.id not in svgs:
            raise ValueError(f"no chart was drawn for the visual {v.id!r}")
        uses_time = any(c.endswith("_s") for c in v.table.columns) or bool(v.episodes)
        sections.append(
            ChartSection(
                id=v.id,
                title=v.title,
                caption=v.caption,
                svg=svgs[v.id],
                columns=v.table.columns,
                rows=tuple(tuple(units.cell(x) for x in row) for row in v.table.rows),
                rules=v.supports_rules,
                time_origin=units.timestamp(v.time_origin_utc) if uses_time and v.time_origin_utc else None,
                episodes=tuple(
                    (e.kind.replace("_", " "), units.cell(e.start_s), units.cell(e.end_s), e.label, e.rule or "") for e in v.episodes
                ),
            )
        )
    return tuple(sections)


@dataclass(frozen=True)
class TracePage:
    """One trace's page: its entry (report, comparison, gate, next checks) and its charts."""

    entry: TraceEntry
    charts: tuple[ChartSection, ...] = ()
    index_href: str = "index.html"


# ---------------------------------------------------------------- page models (presentation only)


@dataclass(frozen=True)
class EvidenceTable:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int  # rows in the finding's evidence (rows shows at most MAX_EVIDENCE_ROWS)


def evidence_items(finding: Finding) -> tuple[list[tuple[str, str]], list[EvidenceTable]]:
    """A finding's typed evidence: (name, value in its unit) pairs, and the lists of records
    (episodes, windows, devices) as tables."""
    scalars: list[tuple[str, str]] = []
    tables: list[EvidenceTable] = []
    for item in finding.evidence.entries:
        records = item.records
        if records is None:
            scalars.append((item.name, units.evidence(item.value, item.unit)))
            continue
        columns = tuple(dict.fromkeys(str(k) for r in records for k in r))
        rows = tuple(tuple(units.evidence(r.get(c)) for c in columns) for r in records[:MAX_EVIDENCE_ROWS])
        tables.append(EvidenceTable(item.name, columns, rows, len(records)))
    return scalars, tables


def _charts_by_rule(charts: Sequence[ChartSection]) -> dict[str, list[ChartSection]]:
    out: dict[str, list[ChartSection]] = {}
    for chart in charts:
        for rule in chart.rules:
            out.setdefault(rule, []).append(chart)
    return out


def _not_evaluable(report: Report) -> list[tuple[str, str, str]]:
    """(name, why, missing columns) of every rule, index or metric the trace cannot evaluate."""
    return [(name, e.reason or "", ", ".join(e.missing)) for name, e in report.evaluability.items() if not e.evaluated]


_LINK_LABEL = {"end_to_end": "end to end"}


def _link_label(name: str) -> str:
    return _LINK_LABEL.get(name, name.replace("_", " \u2194 ", 1))


def _measure_cells(m: MeasureChange) -> tuple[str, str, str, str]:
    """Base, candidate, delta and relative change of a measure, in its unit (as compare's outputs)."""
    return units.display(m.base, m.unit), units.display(m.candidate, m.unit), units.delta(m.delta, m.unit), units.relative(m.relative_change)


def _provenance_view(p: Provenance) -> dict[str, Any]:
    """A converted trace's sources and where each column came from, in status order (observed
    first, absent last), then layer and column; each source's first metric summaries."""
    rank = {status: i for i, status in enumerate(COLUMN_STATUSES)}
    columns = sorted(p.columns, key=lambda c: (rank.get(c.status, len(rank)), c.layer, c.column))
    sources = [
        {
            "s": s,
            "shift": f"{s.offset_s:+,.0f} s" if s.offset_s else "",
            "unmapped": ", ".join(f"{k} {v:,}" for k, v in s.unmapped.items()),
            "summaries": [summary_line(m) for m in s.summaries[:MAX_SUMMARY_ROWS]],
            "more_summaries": max(0, len(s.summaries) - MAX_SUMMARY_ROWS),
        }
        for s in p.sources
    ]
    return {
        "sources": sources,
        "columns": [(f"{c.layer}.{c.column}", c.status, c.source or "", column_how(c)) for c in columns],
        "absent_layers": ", ".join(p.absent_layers()),
        "absent_meaning": ABSENT_MEANING,
    }


def _comparison_view(c: Comparison) -> dict[str, Any]:
    return {"c": c, "verdict": verdict(c), "shift_rows": shift_rows(c), "measures": [(m, _measure_cells(m)) for m in c.measures]}


# ---------------------------------------------------------------- environment and policy


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coherence_diag.render", "templates"),
        autoescape=True,  # every template here is HTML: escape every value
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        utc=units.timestamp,
        num=lambda v, digits=3: units.number(v, f".{digits}f"),
        value=units.display,
        count=lambda v: units.number(v, ",.0f"),
        link_label=_link_label,
        pct=units.percent,
        ms=lambda v: units.display(v, "ms"),
    )
    env.globals.update(tool_version=__version__, evidence_items=evidence_items)
    return env


@cache
def asset(name: str) -> str:
    """A stylesheet or script shipped in render/templates/, inlined into every page."""
    return resources.files("coherence_diag.render").joinpath("templates", name).read_text("utf-8")


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(styles: Iterable[str], scripts: Iterable[str] = ()) -> Markup:
    """`default-src 'none'`: nothing may load; only the listed inline styles and scripts run.
    Markup: fixed keywords and base64 hashes only, safe inside a double-quoted attribute."""
    style_hashes = sorted({sha256_source(s) for s in styles})
    script_hashes = sorted({sha256_source(s) for s in scripts})
    parts = ["default-src 'none'", "style-src " + " ".join(style_hashes) if style_hashes else "style-src 'none'"]
    parts.append("script-src " + " ".join(script_hashes) if script_hashes else "script-src 'none'")
    parts += ["img-src 'none'", "base-uri 'none'", "form-action 'none'"]
    return Markup("; ".join(parts))


# ---------------------------------------------------------------- pages


def render_page(page: TracePage) -> str:
    """The page of one analyzed trace (registry: subject "page", format "html")."""
    entry, charts = page.entry, page.charts
    if entry.report is None:
        raise ValueError(f"{entry.path}: no report to render (the trace failed: {entry.error})")
    ids = [c.id for c in charts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"chart ids must be unique within a page, got {ids}")
    css = asset("report.css")
    styles = [css, *(s for c in charts for s in c.styles)]
    report = entry.report
    return _environment().get_template("report.html.j2").render(
        entry=entry,
        report=report,
        csp=content_security_policy(styles),
        css=Markup(css),
        charts=charts,
        chart_svg={c.id: Markup(c.svg) for c in charts if c.svg is not None},  # checked by its producer
        charts_by_rule=_charts_by_rule(charts),
        chart_origin=next((c.time_origin for c in charts if c.time_origin), None),
        finding_rules={f.rule for f in report.findings},
        not_evaluable=_not_evaluable(report),
        comparison=_comparison_view(entry.comparison) if entry.comparison is not None else None,
        provenance=_provenance_view(report.provenance) if report.provenance is not None else None,
        index_href=page.index_href,
    )


def render_report(entry: TraceEntry, charts: Sequence[ChartSection] = (), *, index_href: str = "index.html") -> str:
    """`render_page` of an entry and its chart sections."""
    return render_page(TracePage(entry, tuple(charts), index_href))


def render_index(batch: Batch) -> str:
    """The index of a batch: every trace, worst first, linking to its page and worst finding
    (registry: subject "batch", format "html")."""
    ranked = batch.ranked
    css, script = asset("report.css"), asset("sort.js")
    options = batch.options
    return _environment().get_template("index.html.j2").render(
        entries=ranked,
        ranks={e.name: i for i, e in enumerate(ranked)},
        counts={v: n for v, n in verdict_counts(ranked).items() if n},
        verdict_order={v: i for i, v in enumerate(VERDICTS)},
        options=options,
        policy_name=options.policy.name if options.policy is not None else None,
        csp=content_security_policy([css], [script]),
        css=Markup(css),
        script=Markup(script),
    )
