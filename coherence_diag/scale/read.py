"""Reading a trace in work units for `analyze` (docs/scale.md): when, with what budget, and
the validated trace and request table the units give, which the rest of the analysis reads
exactly as it reads a single pass's.

The memory budget is for the whole run (plan.RunEstimate, from the Parquet footers): a trace is
read in one pass when the estimate of that pass fits the budget and no scheduler is asked for,
which is faster; otherwise in units, whose own budget is the run's less what the process holds
besides the running unit. A budget asked for that the analysis after the units would exceed
anyway is an InputError before anything is read, naming the smallest budget that fits: the
budget is a limit the user set (a container, a shared machine), and a run that cannot keep it
would be killed or crowd others out minutes later. The default budget, half the machine's
physical memory, is not a promise: a trace over it is still read, in the smallest units the
budget allows, and `ScaleOptions.note` is told. Traces that cannot be planned (CSV files,
footers without `ts` statistics) are read in one pass unless a budget or a scheduler was asked
for explicitly, which then is an InputError saying why (normalise first).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from coherence_diag import validate
from coherence_diag.errors import InputError
from coherence_diag.ingest import FileSource, TraceSource, open_trace
from coherence_diag.scale.executors import Executor, executor, local_workers
from coherence_diag.scale.footers import read_footers
from coherence_diag.scale.plan import RunEstimate, UnitPlan, plan_units
from coherence_diag.scale.reduce import UnitProgress, plan_trace, run_units
from coherence_diag.summary import PathsRead
from coherence_diag.summary import merge as merge_summaries

DEFAULT_BUDGET_SHARE = 0.5  # of the machine's physical memory
FALLBACK_BUDGET_BYTES = 4 * 1024**3  # where the physical memory cannot be read


@dataclass(frozen=True)
class ScaleOptions:
    """How a trace larger than memory is read: within `memory_budget_bytes` for the whole run
    (None: the machine's default), in work units run on `scheduler` (None: in this process;
    `local`; `tcp://HOST:PORT`; `dask`); `progress` after each finished unit task; `note` told
    one line when the default budget will be exceeded."""

    memory_budget_bytes: int | None = None
    scheduler: str | None = None
    progress: UnitProgress | None = None
    # An executor already open (scale.executors.executor), used instead of `scheduler`: one Dask
    # cluster for many traces.
    executor: Executor | None = None
    # The units' own budget, taken as is (no whole-run reserve, no check; read in units when that
    # gives more than one): for tests and benchmarks that study units, e.g. 1 byte for one window
    # per unit. Overrides `memory_budget_bytes`.
    unit_budget_bytes: int | None = None
    note: Callable[[str], None] | None = None
    # This run is one of `budget_share` runs at once on this machine (the traces of a batch on
    # a local cluster's workers, reports.py): its budget is that share of the whole.
    budget_share: int = 1

    @property
    def explicit(self) -> bool:
        return (
            self.memory_budget_bytes is not None or self.unit_budget_bytes is not None or bool(self.scheduler) or self.executor is not None
        )

    @property
    def forced(self) -> bool:
        """A scheduler was asked for: units even for a trace that fits one pass."""
        return bool(self.scheduler) or self.executor is not None


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
    plan = plan_run(source, options, window_s)
    if plan is None:
        return None
    with nullcontext(options.executor) if options.executor is not None else executor(options.scheduler) as run:
        reduced = run_units(
            source.display_path if isinstance(path, FileSource) else str(path),
            budget_bytes=plan.budget_bytes,
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


def plan_run(source: FileSource, options: ScaleOptions, window_s: float) -> UnitPlan | None:
    """The work units of the trace within the run's budget (module doc); None: read it in one pass."""
    if options.unit_budget_bytes is not None:
        plan = plan_trace(source, budget_bytes=options.unit_budget_bytes, window_s=window_s)
        return plan if len(plan.units) > 1 or options.forced else None
    budget_bytes = (options.memory_budget_bytes or default_budget_bytes()) // max(1, options.budget_share)
    if not options.explicit and any(f.fmt != "parquet" for f in source.files):
        return None  # cannot be planned; the layout note suggests `normalize` for large ones
    footers = read_footers(source)
    # At the whole budget: the trace's rows and footer bytes (every column, as a unit reads them).
    whole = plan_units(footers, budget_bytes=budget_bytes, window_s=window_s)
    if whole.unplannable:
        if options.explicit:
            raise InputError(f"{source.display_path}: cannot be split into work units: {whole.unplannable}")
        return None
    estimate = RunEstimate(whole.rows, whole.footer_bytes, units_at_once=units_at_once(options))
    if estimate.one_pass_bytes <= budget_bytes and not options.forced:
        return None
    overrun = estimate.smallest_budget_bytes > budget_bytes
    if overrun:
        if options.memory_budget_bytes is not None:
            raise InputError(over_budget_message(source.display_path, estimate, budget_bytes, share=options.budget_share))
        if options.note is not None:
            options.note(over_budget_message(source.display_path, estimate, budget_bytes, default=True, share=options.budget_share))
    unit_budget_bytes = estimate.unit_budget_bytes(budget_bytes)
    plan = plan_units(footers, budget_bytes=unit_budget_bytes, window_s=window_s)
    # One window cannot be split: units would only add their census to the single pass.
    in_units = len(plan.units) > 1 or options.forced
    if in_units and not overrun and options.note is not None:
        # A window is never split (its partials would not be exact): one whose own rows exceed the
        # units' budget may take the run past it; told (once: not when the run is already told it
        # exceeds the budget). Judged without the hypervisor look-back, which the plan counts as
        # every row of row groups that mix layers (a unit reads far fewer): not refused either.
        alone = plan_units(footers, budget_bytes=unit_budget_bytes, window_s=window_s, lookback_ns=0)
        if alone.over_budget:
            options.note(window_over_budget_message(source.display_path, alone, estimate, budget_bytes, share=options.budget_share))
    return plan if in_units else None


def units_at_once(options: ScaleOptions) -> int:
    """Units that run at once on this machine with `options`' executor (RunEstimate)."""
    if options.executor is not None:
        return options.executor.units_at_once
    return local_workers() if options.scheduler == "local" else 1


def over_budget_message(display_path: str, estimate: RunEstimate, budget_bytes: int, *, default: bool = False, share: int = 1) -> str:
    """One line: the trace, what its run is estimated to need and why, the budget, the smallest
    that fits (`share`: the run has 1/share of the budget, ScaleOptions.budget_share)."""
    smallest_bytes = estimate.smallest_budget_bytes
    in_analysis = smallest_bytes <= math.ceil(estimate.analysis_bytes)
    why = "its analysis after the work units" if in_analysis else "its smallest work units and what they keep"
    text = f"{display_path}: its {estimate.rows:,} rows are estimated to need {smallest_bytes / 2**30:.2f} GiB ({why}), "
    whose = "" if share == 1 else f"{budget_bytes / 2**30:.2f} GiB, its 1/{share} share of "
    if default:
        whole = f"the default memory budget of {budget_bytes * share / 2**30:.2f} GiB (half this machine's memory)"
        return text + f"over {whose}{whole}; reading it anyway"
    return (
        text + f"over {whose}--memory-budget {budget_bytes * share / 2**30:.2f} GiB; "
        f"the smallest budget that fits is --memory-budget {_typed_gib(smallest_bytes * share)}"
    )


def window_over_budget_message(display_path: str, plan: UnitPlan, estimate: RunEstimate, budget_bytes: int, *, share: int = 1) -> str:
    """One line: the windows whose unit alone is estimated over the units' budget, the largest
    estimate, and the whole-run budget that would hold it (or a shorter window)."""
    over = plan.over_budget
    worst = max(u.peak_bytes for u in over)
    needed = max(estimate.budget_for_unit_bytes(worst), estimate.smallest_budget_bytes) * share
    return (
        f"{display_path}: {len(over)} of its {plan.window_ns / 1e9:g} s windows are each estimated to need more than a work "
        f"unit's {plan.budget_bytes / 2**30:.2f} GiB (up to {worst / 2**30:.2f} GiB) and a window is never split: the run may "
        f"exceed its budget of {budget_bytes * share / 2**30:.2f} GiB; --memory-budget {_typed_gib(needed)} "
        "or a shorter --window would hold them"
    )


def _typed_gib(size_bytes: float) -> str:
    """`size_bytes` rounded up to 0.1 GiB, as a user would type it for --memory-budget."""
    return f"{math.ceil(size_bytes / 2**30 * 10) / 10:g}GiB"
