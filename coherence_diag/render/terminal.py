"""Rich terminal view of a Report: trace facts, metrics, indices, findings, blind spots."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from coherence_diag import units
from coherence_diag.model import Evaluability, FeatureReading, Provenance, Quantiles, Report
from coherence_diag.render.provenance_text import ABSENT_MEANING, column_how, summary_line
from coherence_diag.render.style import SEVERITY_STYLE


def render(report: Report, console: Console) -> None:
    console.print(_trace_panel(report))
    if report.provenance is not None:
        console.print(_provenance_panel(report.provenance))
    console.print(_metrics_table(report))
    console.print(_indices_table(report))
    health = _health(report)
    if health is not None:
        console.print(health)
    console.print(_findings(report))
    for note in report.unexplained_indices:
        console.print(Panel(escape(note.message), title="index without an explanation", border_style="yellow", expand=False))
    blind = _blind_spots(report.evaluability)
    if blind is not None:
        console.print(blind)
    if report.features is not None:
        console.print(_features_table(report.features))


_NA = f"[dim]{units.NA}[/dim]"


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return _NA if value is None else units.number(value, spec)


def _pct(value: float | None) -> str:
    return _NA if value is None else units.percent(value)


def _trace_panel(report: Report) -> Panel:
    t = report.trace
    layers = ", ".join(f"{name} {count:,}" for name, count in t.layers.items()) or "none"
    lines = [
        f"[bold]{escape(t.path)}[/bold]",
        f"rows {t.rows:,}  ({layers})",
        f"requests {t.requests:,}   span {escape(t.start or '?')} -> {escape(t.end or '?')}"
        + (f"  ({t.duration_s:,.1f} s)" if t.duration_s else ""),
        f"envs {escape(', '.join(t.envs)) or '-'}   window {report.window_s:g} s",
        _request_line(report),
    ]
    if t.set_aside:
        aside = ", ".join(f"{escape(k)} {v:,}" for k, v in t.set_aside.items())
        lines.append(f"[yellow]set aside: {aside}[/yellow]")
    return Panel("\n".join(lines), title="trace", expand=False)


SUMMARY_LINES = 6  # metric summaries shown in the terminal (the JSON report has them all)


def _provenance_panel(p: Provenance) -> Panel:
    """Where the columns came from: a converted trace's sources, then each status's columns."""
    lines = []
    for s in p.sources:
        shift = f", shifted {s.offset_s:+,.0f} s" if s.offset_s else ""
        lines.append(f"[bold]{escape(s.name)}[/bold] {escape(s.path)}: {s.records:,} records -> {s.rows:,} rows ({s.clock} clock{shift})")
        for note in s.notes:
            lines.append(f"  [dim]{escape(note)}[/dim]")
        for m in s.summaries[:SUMMARY_LINES]:
            lines.append("  " + escape(summary_line(m)))
        if len(s.summaries) > SUMMARY_LINES:
            lines.append(f"  [dim]... {len(s.summaries) - SUMMARY_LINES} more summaries in the JSON report[/dim]")
        if s.unmapped:
            lines.append("  [yellow]not converted: " + escape(", ".join(f"{k} {v:,}" for k, v in s.unmapped.items())) + "[/yellow]")
    for status in ("observed", "derived", "supplied", "simulated"):
        entries = p.by_status(status)
        if not entries:
            continue
        if status == "simulated":
            layers = sorted({e.layer for e in entries})
            lines.append(f"simulated: {len(entries)} columns of {', '.join(layers)}")
            continue
        shown = []
        for e in entries:
            how = column_how(e)
            shown.append(f"{e.layer}.{e.column}" + (f" ({how})" if how else ""))
        lines.append(f"{status}: " + escape("; ".join(shown)))
    absent = p.absent_layers()
    if absent:
        lines.append(
            "[yellow]absent layers: " + escape(", ".join(absent)) + f"[/yellow] [dim]({ABSENT_MEANING})[/dim]"
        )
    return Panel("\n".join(lines), title="provenance (converted trace)", expand=False)


def _request_line(report: Report) -> str:
    c = report.metrics.requests
    return (
        f"inference requests {c.inference:,}: {c.completed:,} completed, {c.timeout:,} timed out, "
        f"{c.dropped:,} dropped, {c.unfinished:,} unfinished, {c.retried:,} retried; batch jobs {c.batch:,}"
    )


def _metrics_table(report: Report) -> Table:
    m = report.metrics
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("p99", justify="right")

    def row(name: str, q: Quantiles) -> None:
        table.add_row(name, _fmt(q.p50), _fmt(q.p95), _fmt(q.p99))

    row("end-to-end latency (ms)", m.latency_ms)
    row("time to first token (ms)", m.ttft_ms)
    row("queue wait (ms)", m.queue_wait_ms)
    table.add_section()
    source = f" [dim]({m.nominal_utilization_source})[/dim]" if m.nominal_utilization_source else ""
    for label, value in [
        ("nominal utilization" + source, _pct(m.nominal_utilization)),
        ("effective utilization", _pct(m.effective_utilization)),
        ("SLO attainment", _pct(m.slo_attainment)),
        ("timeout rate", _pct(m.timeout_rate)),
        ("drop rate", _pct(m.drop_rate)),
        ("goodput (req/s)", _fmt(m.goodput_rps, ",.2f")),
        ("throughput (req/s)", _fmt(m.throughput_rps, ",.2f")),
    ]:
        table.add_row(label, value, "", "")
    return table


def _indices_table(report: Report) -> Table:
    table = Table(title="coherence indices", title_justify="left")
    for name in ("index", "value", "direction", "meaning"):
        table.add_column(name)
    rows = [
        ("CI", "higher is better", "coherence across layers and links"),
        ("DI", "higher is worse", "share of request time lost to waiting"),
        ("WPI", "higher is worse", "how far instability spreads"),
        ("HCL", "higher is worse", "busy time that produced nothing useful"),
    ]
    for name, direction, meaning in rows:
        table.add_row(name, _fmt(getattr(report.indices, name), ",.3f"), direction, meaning)
    return table


def _health(report: Report) -> Table | None:
    b = report.index_breakdown
    if not b.layers and not b.links:
        return None
    table = Table(title="synchronization map (1 = healthy)", title_justify="left")
    table.add_column("layer")
    table.add_column("health", justify="right")
    table.add_column("link")
    table.add_column("alignment", justify="right")
    layers = list(b.layers.items())
    links = list(b.links.items())
    for i in range(max(len(layers), len(links))):
        lname, lval = layers[i] if i < len(layers) else ("", None)
        kname, kval = links[i] if i < len(links) else ("", None)
        table.add_row(
            lname, _score(lval) if lname else "", kname.replace("_", " <-> ", 1) if kname != "end_to_end" else "end to end",
            _score(kval) if kname else "",
        )
    return table


def _score(value: float | None) -> str:
    if value is None:
        return _NA
    style = "green" if value >= 0.8 else "yellow" if value >= 0.5 else "red"
    return f"[{style}]{value:.2f}[/{style}]"


def _findings(report: Report) -> Panel:
    if not report.findings:
        return Panel("[green]no findings[/green]", title="findings", expand=False)
    table = Table.grid(padding=(0, 1))
    for f in report.findings:
        style = SEVERITY_STYLE[f.severity]
        domains = f.domain + (f" (+{', '.join(f.supporting_domains)})" if f.supporting_domains else "")
        table.add_row(
            f"[{style}]{f.severity.upper()}[/{style}]",
            f"[bold]{escape(f.rule)}[/bold] [dim]{escape(f.kind)} | {escape(domains)} | score {f.score:.2f}[/dim]",
        )
        table.add_row("", escape(f.summary))
        if f.confidence < 1.0 or f.estimated_inputs:
            absent = ", ".join(a.signal for a in f.absent_evidence)
            notes = [f"confidence {f.confidence:.2f}"] + ([f"absent: {absent}"] if absent else []) + list(f.estimated_inputs)
            table.add_row("", f"[dim]{escape('; '.join(notes))}[/dim]")
        scalars = [e for e in f.evidence.entries if e.records is None]
        evidence = ", ".join(f"{escape(e.name)}={escape(units.evidence(e.value, e.unit))}" for e in scalars)
        if evidence:
            table.add_row("", f"[dim]evidence: {evidence}[/dim]")
        for e in f.evidence.entries:
            if (records := e.records) is not None:
                table.add_row("", _records_table(e.name, records))
    return Panel(table, title="findings (most severe first)", expand=False)


_MAX_RECORDS = 5


def _records_table(name: str, records: tuple[Mapping[str, object], ...]) -> Table:
    columns = list(dict.fromkeys(k for r in records for k in r))
    shown = records[:_MAX_RECORDS]
    more = len(records) - len(shown)
    title = f"{name} ({len(records)}{', first ' + str(len(shown)) if more else ''})"
    table = Table(title=escape(title), title_justify="left", title_style="dim", box=None, padding=(0, 1), header_style="dim")
    for c in columns:
        table.add_column(escape(str(c)), style="dim", overflow="fold")
    for r in shown:
        table.add_row(*(escape(units.evidence(r.get(c, ""))) for c in columns))
    return table


def _blind_spots(evaluability: dict[str, Evaluability]) -> Panel | None:
    rows = [(name, e) for name, e in evaluability.items() if not e.evaluated]
    if not rows:
        return None
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)  # names are identifiers: never cut them
    table.add_column(ratio=2, overflow="fold")
    table.add_column(ratio=1, overflow="fold")
    for name, e in rows:
        needs = f"needs {', '.join(e.missing)}" if e.missing else ""
        table.add_row(escape(name), escape(e.reason or ""), f"[dim]{escape(needs)}[/dim]")
    return Panel(Group(table), title="what this trace cannot tell you", expand=False)


def _features_table(readings: dict[str, FeatureReading]) -> Table:
    table = Table(title="features (docs/features.md)", title_justify="left")
    table.add_column("feature", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("why undefined", overflow="fold", min_width=24)
    for name, r in readings.items():
        value = _NA if r.value is None else escape(units.evidence(r.value))  # the unit has its own column
        why = f"needs {', '.join(r.missing)}" if r.missing else (r.reason or "")
        table.add_row(escape(name), value, escape(r.unit), f"[dim]{escape(why)}[/dim]" if why else "")
    return table
