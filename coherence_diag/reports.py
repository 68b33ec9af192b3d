"""Batch reports: `coherence-diag report TRACE... --out DIR` as a library call.

    from coherence_diag.reports import build_reports
    from coherence_diag.batch import BatchOptions
    result = build_reports(["a.parquet", "b.parquet"], "out", options=BatchOptions(baseline="base.parquet"), jobs=2)
    result.exit_code(keep_going=False), [e.error for e in result.failed]

Writes, each atomically (a temporary file, then os.replace: a reader never sees part of a file):
DIR/<name>.html for every trace that could be analyzed (render/html.py), then DIR/index.html
(every trace, worst first, failed ones with their error) and DIR/summary.json
(render/summary.py). Traces are analyzed and their pages rendered in worker processes
(batch.run_parallel); each page is written as soon as its trace is done. Bad usage (no trace,
DIR a file or inside an input trace, an unusable baseline) raises InputError before anything
is written. Progress goes through a callback; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coherence_diag import analysis
from coherence_diag.batch import BatchOptions, BatchProgress, TraceEntry, analyze_entry, baseline_analysis, report_names, run_parallel
from coherence_diag.errors import InputError
from coherence_diag.outputs import write_atomic
from coherence_diag.render import html, summary

INDEX_FILE = "index.html"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ReportsResult:
    out_dir: Path
    entries: tuple[TraceEntry, ...]  # in the order the traces were given
    written: tuple[Path, ...]  # every file written, pages first, then the index and summary.json

    @property
    def failed(self) -> tuple[TraceEntry, ...]:
        return tuple(e for e in self.entries if e.error is not None)

    @property
    def gate_failed(self) -> tuple[TraceEntry, ...]:
        return tuple(e for e in self.entries if e.gate_passed is False)

    def exit_code(self, *, keep_going: bool) -> int:
        """2 when a trace failed (unless keep_going), else 1 when a gate failed, else 0."""
        if self.failed and not keep_going:
            return 2
        return 1 if self.gate_failed else 0


@dataclass(frozen=True)
class _Task:
    name: str
    path: str
    options: BatchOptions


def _build_page(task: _Task) -> tuple[TraceEntry, str | None]:
    """Worker: analyze one trace and render its page (None when the trace failed)."""
    entry = analyze_entry(task.name, task.path, task.options)
    return entry, (html.render_report(entry, index_href=INDEX_FILE) if entry.report is not None else None)


def build_reports(
    traces: Sequence[str],
    out_dir: str | Path,
    *,
    options: BatchOptions = BatchOptions(),
    jobs: int | None = None,
    progress: BatchProgress | None = None,
) -> ReportsResult:
    """Analyze every trace and write its page, the index and summary.json into `out_dir`."""
    out = Path(out_dir)
    _check_usage(traces, out, options)
    if options.baseline is not None:  # an unusable baseline is bad usage: exit 2 before any output
        if jobs == 1 or len(traces) == 1:
            baseline_analysis(options)  # kept for this process, where the traces are then analyzed
        else:
            analysis.read_trace(options.baseline, max_bad_fraction=options.max_bad_fraction)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [_Task(name, path, options) for name, path in zip(report_names(traces), traces)]
    written: list[Path] = []

    def write_page(_i: int, result: tuple[TraceEntry, str | None]) -> None:
        entry, page = result
        if page is not None:
            target = out / f"{entry.name}.html"
            write_atomic(target, page)
            written.append(target)

    results = run_parallel(_build_page, tasks, jobs=jobs, label=lambda t: t.path, progress=progress, on_result=write_page)
    entries = tuple(entry for entry, _page in results)
    for name, text in ((INDEX_FILE, html.render_index(entries, options)), (SUMMARY_FILE, summary.render_summary(entries, options))):
        write_atomic(out / name, text)
        written.append(out / name)
    return ReportsResult(out_dir=out, entries=entries, written=tuple(written))


def _check_usage(traces: Sequence[str], out: Path, options: BatchOptions) -> None:
    if not traces:
        raise InputError("report needs at least one trace")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a directory, and this is a file")
    target = out.resolve()
    for trace in [*traces, *([options.baseline] if options.baseline else [])]:
        source = Path(trace).resolve()
        if source.is_dir() and (target == source or source in target.parents):
            raise InputError(f"{out}: refusing to write reports into the input trace directory {trace}")
