"""Reading a trace in work units for `analyze` (docs/scale.md): when, with what budget, and
the validated trace and request table the units give, which the rest of the analysis reads
exactly as it reads a single pass's.

When: a trace is read in units when its estimated peak (plan.py, from the Parquet footers)
exceeds the memory budget, or when a scheduler is asked for; otherwise in one pass, which is
faster. The budget defaults to half the machine's physical memory. Traces that cannot be
planned (CSV files, footers without `ts` statistics) are read in one pass unless a budget or a
scheduler was asked for explicitly, which then is an InputError saying why (normalise first).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from coherence_diag import validate
from coherence_diag.errors import InputError
from coherence_diag.ingest import FileSource, TraceSource, open_trace
from coherence_diag.scale.executors import Executor, executor
from coherence_diag.scale.plan import UnitPlan
from coherence_diag.scale.reduce import UnitProgress, plan_trace, run_units
from coherence_diag.summary import PathsRead
from coherence_diag.summary import merge as merge_summaries

DEFAULT_BUDGET_SHARE = 0.5  # of the machine's physical memory
FALLBACK_BUDGET_BYTES = 4 * 1024**3  # where the physical memory cannot be read


@dataclass(frozen=True)
class ScaleOptions:
    """How a trace larger than memory is read: work units within `memory_budget_bytes` (None: the
    machine's default), run on `scheduler` (None: in this process; `local`; `tcp://HOST:PORT`;
    `dask`); `progress` after each finished unit task."""

    memory_budget_bytes: int | None = None
    scheduler: str | None = None
    progress: UnitProgress | None = None
    # An executor already open (scale.executors.executor), used instead of `scheduler`: one Dask
    # cluster for many traces.
    executor: Executor | None = None

    @property
    def explicit(self) -> bool:
        return self.memory_budget_bytes is not None or bool(self.scheduler) or self.executor is not None


def default_budget_bytes() -> int:
    """Half of the machine's physical memory."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * DEFAULT_BUDGET_SHARE)
    except (ValueError, OSError, AttributeError):
        return FALLBACK_BUDGET_BYTES


def read_in_units(
    path: str | Path | TraceSource, options: ScaleOptions, *, window_s: float, max_bad_fraction: float
) -> PathsRead | None:
    """The trace read in work units; None when the trace is better read in one pass (it fits
    the budget and no scheduler was asked for)."""
    if isinstance(path, TraceSource) and not isinstance(path, FileSource):
        if options.explicit:
            raise InputError("--memory-budget and --scheduler apply to a trace file; converted --from inputs are read in one pass")
        return None
    source = path if isinstance(path, FileSource) else open_trace(path)
    budget = options.memory_budget_bytes or default_budget_bytes()
    if not options.explicit:
        if any(f.fmt != "parquet" for f in source.files):
            return None  # cannot be planned; the layout note suggests `normalize` for large ones
        plan = plan_trace_or_none(source, budget, window_s)
        if plan is None or len(plan.units) <= 1:
            return None
    else:
        plan = plan_trace(source, budget_bytes=budget, window_s=window_s)
        if len(plan.units) <= 1 and not options.scheduler and options.executor is None:
            return None
    with nullcontext(options.executor) if options.executor is not None else executor(options.scheduler) as run:
        reduced = run_units(
            source.display_path if isinstance(path, FileSource) else str(path),
            budget_bytes=budget,
            window_s=window_s,
            max_bad_fraction=max_bad_fraction,
            executor=run,
            progress=options.progress,
            with_layers=True,
            plan=plan,
        )
    trace = validate.ValidatedTrace(source, reduced.layers, reduced.rows_total, reduced.rows_by_layer, reduced.audit)
    # Already in the single pass's row order (spill.gather_requests): inference requests first,
    # completed ones first among them (paths.LEADING_ORDER), which the feature context slices.
    return PathsRead(trace, reduced.requests, reduced.summary or merge_summaries([]))


def plan_trace_or_none(source: FileSource, budget: int, window_s: float) -> UnitPlan | None:
    """The plan, or None when the footers cannot be planned from (then the single pass reads it)."""
    try:
        return plan_trace(source, budget_bytes=budget, window_s=window_s)
    except InputError:
        return None
