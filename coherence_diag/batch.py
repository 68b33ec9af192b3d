"""Analyze many traces for a batch of reports: one entry per trace, ranked worst first.

    from coherence_diag.batch import BatchOptions, analyze_entry, rank, report_names
    names = report_names(["a/run.parquet", "b/run.parquet"])      # ["run", "run-2"]
    analyzed = analyze_entry(names[0], "a/run.parquet", BatchOptions())
    entry = analyzed.entry                                        # analyzed.analysis: the frames (visuals)
    entry.verdict, entry.worst_finding, rank([entry, ...])

An entry holds what every output of `coherence-diag report` renders for one trace: its `Report`,
the `Comparison` against a baseline (`--baseline`), the gate result (`--policy`), the rules'
next checks for its findings, or the error that made the trace unusable. Which trace is worse
than which, the verdict and the worst finding are decided here, once: the HTML page, the index
and summary.json only show them.

`run_parallel` runs a picklable function over tasks in worker processes (spawn context) and
returns the results in task order, whatever the number of workers.

`Batch` is what the index and summary.json of a batch render: every entry and the options.

Nothing here prints, renders or writes files; coherence_diag.reports does.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from coherence_diag import analysis
from coherence_diag.analysis import Analysis
from coherence_diag.compare import compare_analyses
from coherence_diag.errors import InputError
from coherence_diag.gate import Policy, evaluate
from coherence_diag.model import SEVERITIES, Comparison, Finding, GateResult, Report
from coherence_diag.scale.read import ScaleOptions
from coherence_diag.timeseries import DEFAULT_WINDOW_S
from coherence_diag.validate import DEFAULT_MAX_BAD_FRACTION

# (done, total, message): `done` of `total` traces finished; the message names the last one.
BatchProgress = Callable[[int, int, str], None]
Verdict = Literal["error", "critical", "high", "medium", "low", "unexplained", "clean"]

# Worst first: an unusable trace tells nothing, then the most severe finding; "unexplained" is a
# trace without findings whose index lies in its bad range (indices.unexplained).
VERDICTS: tuple[Verdict, ...] = ("error", "critical", "high", "medium", "low", "unexplained", "clean")
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
RESERVED_NAMES = frozenset({"index"})  # DIR/index.html is the index


@dataclass(frozen=True)
class BatchOptions:
    """How every trace of a batch is analyzed (picklable: sent to the worker processes)."""

    window_s: float = DEFAULT_WINDOW_S
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
    rules_dirs: tuple[str, ...] = ()
    baseline: str | None = None  # a trace every trace is compared with (`compare`)
    policy: Policy | None = None  # a gate policy every trace is checked against (`gate`)
    # Traces larger than this are read in work units (scale/read.py; None: the machine's default).
    memory_budget_bytes: int | None = None
    scheduler: str | None = None  # work units on Dask (`local`, tcp://HOST:PORT, `dask`)
    # Traces analyzed at once on this machine that share the budget (ScaleOptions.budget_share).
    budget_share: int = 1

    @property
    def scale(self) -> ScaleOptions:
        return ScaleOptions(self.memory_budget_bytes, self.scheduler, budget_share=self.budget_share)

    def for_workers(self, at_once_here: int) -> BatchOptions:
        """These options as a worker runs them when each trace of the batch is a task of its own
        (reports.py: worker processes, or a Dask cluster's workers): the worker analyzes the trace
        itself (no scheduler of its own; in work units within its budget when the trace is large),
        with 1/`at_once_here` of the budget, `at_once_here` traces being analyzed at once on this
        machine (worker processes, a local cluster's workers; 1 for a remote cluster's)."""
        return replace(self, scheduler=None, budget_share=self.budget_share * max(1, at_once_here))


@dataclass(frozen=True)
class TraceEntry:
    """One trace of a batch: its analysis, or why it could not be analyzed."""

    name: str  # file name stem of its page: DIR/<name>.html
    path: str  # the trace as given
    report: Report | None = None
    comparison: Comparison | None = None  # against BatchOptions.baseline
    gate: GateResult | None = None  # against BatchOptions.policy
    next_checks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rule id -> what to check next
    error: str | None = None  # the trace could not be analyzed: the message naming file and problem
    # What the run told about reading the trace (ScaleOptions.note: over the default memory
    # budget, a window over the units' budget): for the user, not part of any report file.
    notes: tuple[str, ...] = ()

    @property
    def worst_finding(self) -> Finding | None:
        """The most severe finding (then the highest score, then the rule id)."""
        if self.report is None or not self.report.findings:
            return None
        return min(self.report.findings, key=lambda f: (-_SEVERITY_RANK[f.severity], -f.score, f.rule))

    @property
    def verdict(self) -> Verdict:
        if self.report is None:
            return "error"
        worst = self.worst_finding
        if worst is not None:
            return worst.severity
        return "unexplained" if self.report.unexplained_indices else "clean"

    @property
    def gate_passed(self) -> bool | None:
        return None if self.gate is None else self.gate.passed


def rank_key(entry: TraceEntry) -> tuple:
    """Sort key, worst first: verdict, failed gate, worst finding's score, lower CI, higher DI,
    then the name (so that equal traces keep a fixed order)."""
    worst = entry.worst_finding
    indices = entry.report.indices if entry.report is not None else None
    ci = indices.CI if indices is not None and indices.CI is not None else 2.0  # no CI: after every measured one
    di = indices.DI if indices is not None and indices.DI is not None else -1.0
    return (
        VERDICTS.index(entry.verdict),
        0 if entry.gate_passed is False else 1,
        -(worst.score if worst is not None else 0.0),
        round(ci, 6),
        -round(di, 6),
        entry.name,
    )


def rank(entries: Iterable[TraceEntry]) -> tuple[TraceEntry, ...]:
    """The entries, worst first (`rank_key`)."""
    return tuple(sorted(entries, key=rank_key))


def verdict_counts(entries: Iterable[TraceEntry]) -> dict[str, int]:
    """How many traces have each verdict, every verdict listed (worst first)."""
    listed = [e.verdict for e in entries]
    return {v: listed.count(v) for v in VERDICTS}


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def report_names(paths: Sequence[str]) -> list[str]:
    """One page name per trace, in order: the file stem (a directory's name) reduced to
    [A-Za-z0-9._-]; a name already taken (case-insensitively, `index` included) gets -2, -3, ..."""
    taken = set(RESERVED_NAMES)
    names = []
    for path in paths:
        base = _stem(path)
        name, n = base, 2
        while name.lower() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.lower())
        names.append(name)
    return names


def _stem(path: str) -> str:
    last = Path(path.rstrip("/\\") or ".").name
    for suffix in (".parquet", ".csv"):
        if last.lower().endswith(suffix):
            last = last[: -len(suffix)]
            break
    return _UNSAFE.sub("-", last).strip("-.") or "trace"


@dataclass(frozen=True)
class Batch:
    """A batch of traces as its index and summary.json show it: every entry (in the order the
    traces were given) and how they were analyzed."""

    entries: tuple[TraceEntry, ...]
    options: BatchOptions

    @property
    def ranked(self) -> tuple[TraceEntry, ...]:
        """The entries, worst first (`rank_key`)."""
        return rank(self.entries)


@dataclass(frozen=True)
class Analyzed:
    """One trace of a batch analyzed: its entry, and (when the trace could be analyzed) the
    analysis it came from and the baseline's, which the visuals read. Not sent between processes."""

    entry: TraceEntry
    analysis: Analysis | None = None
    baseline: Analysis | None = None


def analyze_entry(name: str, path: str, options: BatchOptions, progress: analysis.ProgressCallback | None = None) -> Analyzed:
    """Analyze one trace of a batch. A trace that cannot be read or analyzed (InputError) is an
    entry with its error, not an exception: the batch goes on without it."""
    rules_dirs = [Path(d) for d in options.rules_dirs]
    notes: list[str] = []
    try:
        result = analysis.analyze(
            path,
            window_s=options.window_s,
            max_bad_fraction=options.max_bad_fraction,
            rules_dirs=rules_dirs,
            progress=progress,
            scale=replace(options.scale, note=notes.append),
        )
    except InputError as exc:
        return Analyzed(TraceEntry(name=name, path=path, error=str(exc), notes=tuple(notes)))
    comparison = gate = None
    base = baseline_analysis(options) if options.baseline is not None else None
    if base is not None:
        comparison = compare_analyses(base, result, rules_dirs=rules_dirs)
    if options.policy is not None:
        gate = evaluate(options.policy, result.report, base.report if base is not None else None)
    fired = {f.rule for f in result.report.findings} | {f.rule for f in (comparison.pair_findings if comparison else ())}
    next_checks = {r.id: r.next_checks for r in result.rules if r.id in fired}
    entry = TraceEntry(
        name=name, path=path, report=result.report, comparison=comparison, gate=gate, next_checks=dict(sorted(next_checks.items())),
        notes=tuple(notes),
    )
    return Analyzed(entry, result, base)


# One analysis of the baseline per process: a worker compares it with each of its traces.
_BASELINES: dict[tuple, analysis.Analysis] = {}


def baseline_analysis(options: BatchOptions) -> analysis.Analysis:
    """The baseline's analysis, computed once per process (InputError when it is unusable)."""
    if options.baseline is None:
        raise ValueError("no baseline in these options")
    key = (options.baseline, options.window_s, options.max_bad_fraction, options.rules_dirs)
    if key not in _BASELINES:
        _BASELINES.clear()  # one baseline per batch: keep only the current one
        _BASELINES[key] = analysis.analyze(
            options.baseline,
            window_s=options.window_s,
            max_bad_fraction=options.max_bad_fraction,
            rules_dirs=[Path(d) for d in options.rules_dirs],
            scale=options.scale,
        )
    return _BASELINES[key]


T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    return os.cpu_count() or 1


def run_parallel(
    worker: Callable[[T], R],
    tasks: Sequence[T],
    *,
    jobs: int | None,
    label: Callable[[T], str],
    progress: BatchProgress | None = None,
    on_result: Callable[[int, R], None] | None = None,
) -> list[R]:
    """`worker(task)` for every task, results in task order. One job (or one task): in this
    process; else in `jobs` spawned worker processes (never forked: the parent holds Polars'
    thread pool). `worker` must be a module-level function. In this process, as each task
    finishes: `on_result(index, result)`, then `progress(done, total, label)`. An exception in a
    worker cancels the tasks not yet started and is raised here."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    step = progress or (lambda _done, _total, _message: None)
    deliver = on_result or (lambda _i, _result: None)
    total = len(tasks)
    step(0, total, "starting")
    if jobs == 1 or total <= 1:
        results = []
        for i, task in enumerate(tasks):
            results.append(worker(task))
            deliver(i, results[-1])
            step(i + 1, total, label(task))
        return results
    out: list[R | None] = [None] * total
    pool = ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(worker, task): i for i, task in enumerate(tasks)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            out[i] = future.result()
            deliver(i, out[i])  # type: ignore[arg-type]  # just filled
            step(done, total, label(tasks[i]))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out  # type: ignore[return-value]  # every slot was filled
