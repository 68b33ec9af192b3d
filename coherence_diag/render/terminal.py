"""Rich terminal view of a Report: trace facts, metrics, indices, findings, blind spots."""

from __future__ import annotations

import re

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from coherence_diag.model import Evaluability, FeatureReading, Quantiles, Report

_SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


def render(report: Report, console: Console) -> None:
    console.print(_trace_panel(report))
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


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "[dim]n/a[/dim]"
    return f"{value:,.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    return "[dim]n/a[/dim]" if value is None else f"{value:.1%}"


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
        ("goodput (req/s)", _fmt(m.goodput_rps, digits=2)),
        ("throughput (req/s)", _fmt(m.throughput_rps, digits=2)),
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
        table.add_row(name, _fmt(getattr(report.indices, name), digits=3), direction, meaning)
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
        return "[dim]n/a[/dim]"
    style = "green" if value >= 0.8 else "yellow" if value >= 0.5 else "red"
    return f"[{style}]{value:.2f}[/{style}]"


def _findings(report: Report) -> Panel:
    if not report.findings:
        return Panel("[green]no findings[/green]", title="findings", expand=False)
    table = Table.grid(padding=(0, 1))
    for f in report.findings:
        style = _SEVERITY_STYLE[f.severity]
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
        scalars = {k: v for k, v in f.evidence.items() if not _is_records(v)}
        evidence = ", ".join(f"{escape(str(k))}={escape(_evidence_value(v))}" for k, v in scalars.items())
        if evidence:
            table.add_row("", f"[dim]evidence: {evidence}[/dim]")
        for name, records in f.evidence.items():
            if _is_records(records):
                table.add_row("", _records_table(str(name), records))  # type: ignore[arg-type]
    return Panel(table, title="findings (most severe first)", expand=False)


_MAX_RECORDS = 5


def _is_records(value: object) -> bool:
    """A list of dicts (episodes, windows, devices): shown as a small table, not inline."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, dict) for v in value)


def _records_table(name: str, records: list[dict]) -> Table:
    columns = list(dict.fromkeys(k for r in records for k in r))
    shown = records[:_MAX_RECORDS]
    more = len(records) - len(shown)
    title = f"{name} ({len(records)}{', first ' + str(len(shown)) if more else ''})"
    table = Table(title=escape(title), title_justify="left", title_style="dim", box=None, padding=(0, 1), header_style="dim")
    for c in columns:
        table.add_column(escape(str(c)), style="dim", overflow="fold")
    for r in shown:
        table.add_row(*(escape(_evidence_value(r.get(c, ""))) for c in columns))
    return table


_ISO = re.compile(r"^\d{4}-(\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$")


def _evidence_value(value: object) -> str:
    if isinstance(value, str) and (m := _ISO.match(value)):
        return f"{m.group(1)} {m.group(2)}"  # month-day and time: the year is in the trace panel
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_evidence_value(v) for v in value[:6]) + (", ..." if len(value) > 6 else "") + "]"
    return str(value)


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
        value = "[dim]n/a[/dim]" if r.value is None else escape(_evidence_value(r.value))
        why = f"needs {', '.join(r.missing)}" if r.missing else (r.reason or "")
        table.add_row(escape(name), value, escape(r.unit), f"[dim]{escape(why)}[/dim]" if why else "")
    return table
