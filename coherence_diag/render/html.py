"""Self-contained offline HTML: one page per trace and the index of a batch (`coherence-diag report`).

Pages render the same models as every other output (`batch.TraceEntry`: its `Report`,
`Comparison`, `GateResult`); the templates only lay them out. Everything that shapes what is
shown (which evidence is a table, which chart supports which finding, the Content-Security-Policy)
is decided here in Python.

Safety: Jinja2 autoescapes every value, so a trace-derived string (a device, pool or env name,
a path) is text, never markup. The only unescaped input is a chart's SVG (`ChartSection.svg`),
which its producer (render/charts.py) sanitizes before it gets here. Each page carries a
Content-Security-Policy meta tag: `default-src 'none'` and the sha256 of each inline stylesheet
and script it ships, so the page can make no request of any kind.

Determinism: no clock, no random ids, no absolute paths the caller did not give; the same
entry gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Sequence

import jinja2
from markupsafe import Markup

from coherence_diag import __version__
from coherence_diag.batch import VERDICTS, BatchOptions, TraceEntry, rank_key, verdict_counts
from coherence_diag.compare import Comparison
from coherence_diag.model import Finding, Report
from coherence_diag.render.compare import _shift_rows, delta_text, relative_text, value_text, verdict

MAX_EVIDENCE_ROWS = 20  # rows of one evidence table shown in the page; all are in the JSON report


@dataclass(frozen=True)
class ChartSection:
    """One chart of a trace's page: an inline SVG with the numbers behind it, or why it is omitted.

    `svg` must already be sanitized (an allowlist of SVG elements and attributes, no script, no
    external reference): it is embedded as is. `styles` lists the text of each `<style>` element
    inside it, so that the page's Content-Security-Policy allows exactly those.
    """

    id: str  # unique within the page, [a-z0-9-]: the anchor #chart-<id>
    title: str
    caption: str  # what to look at
    svg: str | None = None
    columns: tuple[str, ...] = ()  # the <details> table of the numbers behind the chart
    rows: tuple[tuple[object, ...], ...] = ()
    omitted_reason: str | None = None  # set instead of svg when the trace cannot support the chart
    rules: tuple[str, ...] = ()  # rule ids whose findings this chart supports
    styles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.id):
            raise ValueError(f"chart id {self.id!r} is not of the form [a-z0-9-]+")
        if (self.svg is None) == (self.omitted_reason is None):
            raise ValueError(f"chart {self.id!r}: give either an svg or an omitted_reason")


# ---------------------------------------------------------------- text of values


def utc_text(iso: str | None) -> str:
    """'2026-01-01T00:00:48.000000Z' -> '2026-01-01 00:00:48 UTC' (milliseconds when not zero)."""
    if iso is None:
        return "n/a"
    m = _ISO.match(iso)
    if not m:
        return iso
    millis = (m.group(3) or ".000")[1:4].ljust(3, "0")
    return f"{m.group(1)} {m.group(2)}{'' if millis == '000' else '.' + millis} UTC"


_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$")


def num_text(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def evidence_text(value: object) -> str:
    if isinstance(value, str):
        return utc_text(value) if _ISO.match(value) else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return ", ".join(evidence_text(v) for v in value)
    return str(value)


# ---------------------------------------------------------------- page models (presentation only)


@dataclass(frozen=True)
class EvidenceTable:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int  # rows in the finding's evidence (rows shows at most MAX_EVIDENCE_ROWS)


def _is_records(value: object) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, dict) for v in value)


def evidence_items(finding: Finding) -> tuple[list[tuple[str, str]], list[EvidenceTable]]:
    """A finding's evidence: (name, value text) pairs, and the lists of records as tables."""
    scalars = [(str(k), evidence_text(v)) for k, v in finding.evidence.items() if not _is_records(v)]
    tables = []
    for name, records in finding.evidence.items():
        if _is_records(records):
            columns = tuple(dict.fromkeys(str(k) for r in records for k in r))  # type: ignore[union-attr]
            shown = records[:MAX_EVIDENCE_ROWS]  # type: ignore[index]
            rows = tuple(tuple(evidence_text(r.get(c)) for c in columns) for r in shown)
            tables.append(EvidenceTable(str(name), columns, rows, len(records)))  # type: ignore[arg-type]
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


def _comparison_view(c: Comparison) -> dict[str, Any]:
    return {
        "c": c,
        "verdict": verdict(c),
        "shift_rows": _shift_rows(c),
    }


# ---------------------------------------------------------------- environment and policy


@lru_cache(maxsize=1)
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
        utc=utc_text,
        num=num_text,
        value=value_text,
        evidence=evidence_text,
        link_label=_link_label,
        pct=lambda v: value_text(v, "frac"),
        ms=lambda v: value_text(v, "ms"),
    )
    env.globals.update(
        tool_version=__version__,
        delta_text=delta_text,
        relative_text=relative_text,
        evidence_items=evidence_items,
    )
    return env


@lru_cache(maxsize=None)
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


def render_report(entry: TraceEntry, charts: Sequence[ChartSection] = (), *, index_href: str = "index.html") -> str:
    """The page of one analyzed trace."""
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
        chart_svg={c.id: Markup(c.svg) for c in charts if c.svg is not None},  # sanitized by its producer
        charts_by_rule=_charts_by_rule(charts),
        finding_rules={f.rule for f in report.findings},
        not_evaluable=_not_evaluable(report),
        comparison=_comparison_view(entry.comparison) if entry.comparison is not None else None,
        index_href=index_href,
    )


def render_index(entries: Iterable[TraceEntry], options: BatchOptions) -> str:
    """The index of a batch: every trace, worst first, linking to its page and worst finding."""
    ranked = sorted(entries, key=rank_key)
    css, script = asset("report.css"), asset("sort.js")
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
