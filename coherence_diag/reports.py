"""Batch reports: `coherence-diag report TRACE... --out DIR` as a library call.

    from coherence_diag.reports import build_reports
    from coherence_diag.batch import BatchOptions
    result = build_reports(["a.parquet", "b.parquet"], "out", options=BatchOptions(baseline="base.parquet"), jobs=2)
    result.exit_code(keep_going=False), [e.error for e in result.failed]

Writes, each atomically (a temporary file, then os.replace: a reader never sees part of a file):
DIR/<name>.html for every trace that could be analyzed, then DIR/index.html (every trace, worst
first, failed ones with their error) and DIR/summary.json. Bad usage (no trace, DIR a file or
inside an input trace, an unusable baseline) raises InputError before anything is written.
Progress goes through a callback; nothing here prints.

How the work is spread (`jobs` processes at most analyze traces at once):

- a trace is analyzed, and its visuals (coherence_diag.visuals: aggregate tables) computed from
  the analysis, where the analysis is: in this process for one trace or `jobs=1`, else in
  spawned worker processes;
- the visuals are drawn (render/charts.py: Altair, rendered to SVG by vl-convert) in a chart
  process started with the batch, which imports the charting libraries and warms the renderer
  up while the first trace is analyzed, and draws each visual as soon as it is computed: the
  charts of one trace are drawn while the next is analyzed, or while this trace's remaining
  visuals are computed. With `jobs=1` everything runs in this process, one step after another;
- this process lays each page out (render/html.py) once its charts are back, and writes it.

Worker and chart processes are spawned (never forked): a script that calls `build_reports` with
`jobs` other than 1 needs the usual `if __name__ == "__main__":` guard around its work.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from coherence_diag import analysis
from coherence_diag.batch import (
    Batch,
    BatchOptions,
    BatchProgress,
    TraceEntry,
    analyze_entry,
    baseline_analysis,
    default_jobs,
    report_names,
    run_parallel,
)
from coherence_diag.errors import InputError
from coherence_diag.model import Visual
from coherence_diag.outputs import write_atomic
from coherence_diag.render import chart_process, registry
from coherence_diag.render.html import TracePage, chart_sections
from coherence_diag.scale.executors import executor
from coherence_diag.visuals import iter_visuals

INDEX_FILE = "index.html"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ReportsResult:
    out_dir: Path
    entries: tuple[TraceEntry, ...]  # in the order the traces were given
    written: tuple[Path, ...]  # every file written, pages first (as they were done), then the index and summary.json

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


@dataclass(frozen=True)
class _Analyzed:
    """What a worker sends back: the entry and its visuals (small tables; no frames)."""

    entry: TraceEntry
    visuals: tuple[Visual, ...] = ()


def _analyze(task: _Task, on_visual: Callable[[Visual], None] | None = None) -> _Analyzed:
    """Analyze one trace and compute its visuals (`on_visual` is told of each as it is done)."""
    analyzed = analyze_entry(task.name, task.path, task.options)
    if analyzed.analysis is None:
        return _Analyzed(analyzed.entry)
    visuals = []
    for visual in iter_visuals(analyzed.analysis, analyzed.entry.comparison, baseline=analyzed.baseline):
        visuals.append(visual)
        if on_visual is not None:
            on_visual(visual)
    return _Analyzed(analyzed.entry, tuple(visuals))


def _analyze_in_worker(task: _Task) -> _Analyzed:
    return _analyze(task)


def _analyze_numbered(i: int, task: _Task) -> tuple[int, _Analyzed]:
    """`_analyze` on a Dask worker: the result comes back with the trace's place in the batch."""
    return i, _analyze(task)


def build_reports(
    traces: Sequence[str],
    out_dir: str | Path,
    *,
    options: BatchOptions | None = None,
    jobs: int | None = None,
    progress: BatchProgress | None = None,
) -> ReportsResult:
    """Analyze every trace and write its page, the index and summary.json into `out_dir`."""
    options = options or BatchOptions()
    out = Path(out_dir)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    _check_usage(traces, out, options)
    tasks = [_Task(name, path, options) for name, path in zip(report_names(traces), traces)]
    # With a Dask scheduler, several traces are tasks on the cluster, each analyzed whole by a
    # worker; a single trace is analyzed here, its work units on the cluster.
    on_cluster = bool(options.scheduler) and len(tasks) > 1
    in_process = not on_cluster and (jobs == 1 or len(tasks) == 1 or bool(options.scheduler))
    # Started first: the chart process warms up (and the cluster starts) while the baseline is read.
    with _chart_executor(jobs, len(tasks)) as drawing, executor(options.scheduler if on_cluster else None) as cluster:
        # Traces analyzed at once on this machine share the budget: a local cluster's workers, or
        # the worker processes (`jobs`); a remote cluster's workers each have their own machine.
        at_once = cluster.units_at_once if on_cluster else min(jobs, len(tasks))
        on_workers = options if in_process else options.for_workers(at_once)
        if options.baseline is not None:  # an unusable baseline is bad usage: exit 2 before any output
            if in_process:
                baseline_analysis(options)  # kept for this process, where the traces are then analyzed
            else:
                analysis.read_for_analysis(
                    options.baseline, window_s=options.window_s, max_bad_fraction=options.max_bad_fraction, scale=on_workers.scale
                )
        out.mkdir(parents=True, exist_ok=True)
        pages = _Pages(out, drawing, len(tasks), progress or (lambda _done, _total, _message: None))
        shared = [replace(t, options=on_workers) for t in tasks]  # the tasks as the workers run them
        if on_cluster:
            numbered = list(enumerate(shared))
            cluster.map(_analyze_numbered, numbered, label="traces", keep=lambda done: pages.accept(*done))
        elif in_process:
            for i, task in enumerate(tasks):
                pages.start(i, task.path)
                pages.accept(i, _analyze(task, on_visual=partial(pages.draw, i)))
        else:
            run_parallel(_analyze_in_worker, shared, jobs=jobs, label=lambda t: t.path, on_result=pages.accept)
        entries = pages.finish()
    batch = Batch(entries, options)
    written = list(pages.written)
    for name, subject_format in ((INDEX_FILE, "html"), (SUMMARY_FILE, "json")):
        write_atomic(out / name, registry.render_text("batch", subject_format, batch))
        written.append(out / name)
    return ReportsResult(out_dir=out, entries=entries, written=tuple(written))


class _Pages:
    """The pages of a batch in the making: charts requested as visuals arrive, each page laid out
    and written once its charts are back, in the order they complete."""

    def __init__(self, out: Path, drawing: Executor, total: int, progress: BatchProgress) -> None:
        self.out, self.drawing, self.total, self.progress = out, drawing, total, progress
        self.entries: list[TraceEntry | None] = [None] * total
        self.visuals: dict[int, list[Visual]] = {}
        self.svgs: dict[int, dict[str, Future[str]]] = {}
        self.labels: dict[int, str] = {}
        self.pending: list[int] = []  # analyzed, page not yet written
        self.written: list[Path] = []
        self.done = 0
        progress(0, total, "starting")

    def start(self, i: int, label: str) -> None:
        self.labels[i] = label
        self.visuals[i], self.svgs[i] = [], {}

    def draw(self, i: int, visual: Visual) -> None:
        """A visual of trace i is computed: request its chart."""
        self.visuals[i].append(visual)
        if visual.defined:
            self.svgs[i][visual.id] = self.drawing.submit(chart_process.draw, visual)

    def accept(self, i: int, analyzed: _Analyzed) -> None:
        """Trace i is analyzed (its visuals already drawn, or drawn now)."""
        if i not in self.visuals:
            self.start(i, analyzed.entry.path)
            for visual in analyzed.visuals:
                self.draw(i, visual)
        self.entries[i] = analyzed.entry
        self.pending.append(i)
        self._write_ready(block=False)

    def finish(self) -> tuple[TraceEntry, ...]:
        self._write_ready(block=True)
        if any(e is None for e in self.entries):
            raise RuntimeError("a trace of the batch was never analyzed")
        return tuple(e for e in self.entries if e is not None)

    def _write_ready(self, *, block: bool) -> None:
        for i in list(self.pending):
            futures = self.svgs[i]
            if not block and not all(f.done() for f in futures.values()):
                continue
            self.pending.remove(i)
            entry = self.entries[i]
            if entry is not None and entry.report is not None:
                svgs = {vid: f.result() for vid, f in futures.items()}  # a chart that failed raises here: a bug
                page = TracePage(entry, chart_sections(self.visuals[i], svgs), index_href=INDEX_FILE)
                target = self.out / f"{entry.name}.html"
                write_atomic(target, registry.render_text("page", "html", page))
                self.written.append(target)
            self.done += 1
            self.progress(self.done, self.total, self.labels.get(i, ""))
            del self.svgs[i], self.visuals[i]


class _InProcess(Executor):
    """An executor that runs each call at once, in this process (`jobs=1`)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@contextmanager
def _chart_executor(jobs: int, traces: int) -> Iterator[Executor]:
    """Where charts are drawn: this process with `jobs=1`; else a spawned process (two when at
    least four jobs analyze several traces) that loads the charting libraries and warms
    vl-convert up at once, while traces are being analyzed."""
    if jobs == 1:
        yield _InProcess()
        return
    workers = 2 if jobs >= 4 and traces > 1 else 1
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=chart_process.warm_up)
    try:
        for _ in range(workers):
            pool.submit(chart_process.ready)  # start the processes now (they start on first use otherwise)
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


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
