"""Benchmark: the work-unit planner's memory estimate against each unit's peak RSS (issue 12;
docs/scale.md, "Work-unit planner").

    python benchmarks/bench_units.py bench-data/healthy-10000000-s1.normalized.parquet --budgets 0.5,1,2

For each budget, `scale.reduce.run_units` runs on the (normalised) trace with an executor that
runs every task in a fresh child process, one at a time, under the watchdog cap of
bench_scale.py: each unit's census, then each unit's `unit_task`, whatever they are today (the
script goes through run_units and the executor protocol, not through their signatures). Per
unit it records the planner's estimate (`Unit.peak_bytes`: PEAK_PER_FOOTER_BYTE x the footer
bytes the unit reads) and the peak RSS of its two children (their own VmHWM, see TASK_CHILD; the
unit task's also before its result is pickled for the parent, which an in-process run does not
do). The watchdog still kills a child whose resident set passes --cap-gib.
The stitch and the reduce run in this process: they are not units.

It prints, per budget, every unit and then the ratio peak / estimate (max and median) and the
measured peak per footer byte: the PEAK_PER_FOOTER_BYTE that would have made each unit's
estimate its peak. A unit stays within its budget when max(peak / estimate) <= 1. The peak of
a child that only imports the unit code is printed too: every unit pays it.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import run_capped  # noqa: E402  (a child under a watchdog cap; its peak RSS from wait4)

# The child's own peak is its VmHWM: `ru_maxrss` (wait4 or getrusage in the child) of a process
# started by fork + exec counts the parent's resident set at the fork, and this parent holds the
# results of the units before (a census then "peaked" at the parent's 985 MiB).
TASK_CHILD = r"""
import json, pickle, sys, time
from pathlib import Path
hwm = lambda: next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")) / 1024
with open(sys.argv[1], "rb") as f:
    fn, args = pickle.load(f)
t = time.perf_counter()
result = fn(*args)
seconds, before_result = time.perf_counter() - t, hwm()
with open(sys.argv[2], "wb") as f:
    pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
print(json.dumps({"seconds": seconds, "peak_mib": hwm(), "task_peak_mib": before_result}))
"""


@dataclass
class Task:
    label: str  # "census" or "units" (run_units' labels)
    unit: Any  # plan.Unit, or None (the rows whose ts is null)
    peak_mib: float  # the child's VmHWM at its end
    task_peak_mib: float  # the child's VmHWM before the result is pickled
    seconds: float


class ChildProcesses:
    """scale.executors' protocol: each task in a fresh child process, one after another."""

    def __init__(self, workdir: Path, cap_bytes: int) -> None:
        self.workdir, self.cap_bytes = workdir, cap_bytes
        self.tasks: list[Task] = []

    def share(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, progress: Callable[[str], None] | None = None, label: str = "units") -> list[Any]:
        from coherence_diag.scale.plan import Unit

        results = []
        for done, task_args in enumerate(args, start=1):
            task, result = self.workdir / "task.pkl", self.workdir / "result.pkl"
            task.write_bytes(pickle.dumps((fn, task_args), protocol=pickle.HIGHEST_PROTOCOL))
            run = run_capped(TASK_CHILD, [str(task), str(result)], self.cap_bytes)
            if run["over_cap"]:
                raise SystemExit(f"a {label} task went over the {self.cap_bytes / 2**30:g} GiB cap after {run['elapsed_s']:.0f} s")
            results.append(pickle.loads(result.read_bytes()))
            unit = next((a for a in task_args if isinstance(a, Unit)), None)
            self.tasks.append(Task(label, unit, run["peak_mib"], run["task_peak_mib"], run["seconds"]))
            if progress:
                progress(f"{label} {done}/{len(args)}")
        return results


def import_only_peak(workdir: Path, cap_bytes: int) -> float:
    """Peak RSS of a child that unpickles a unit-code object (importing Polars and the unit code)."""
    from coherence_diag.scale.units import TraceRef

    task, result = workdir / "task.pkl", workdir / "result.pkl"
    task.write_bytes(pickle.dumps((TraceRef, ("-",))))
    return float(run_capped(TASK_CHILD, [str(task), str(result)], cap_bytes)["peak_mib"])


def measure(
    trace: Path, budget_bytes: int, window_s: float, workdir: Path, cap_bytes: int, with_layers: bool = False
) -> tuple[list[dict[str, Any]], Any, float]:
    from coherence_diag.scale.reduce import run_units

    executor = ChildProcesses(workdir, cap_bytes)
    start = time.perf_counter()
    reduced = run_units(str(trace), budget_bytes=budget_bytes, window_s=window_s, executor=executor, with_layers=with_layers)
    wall = time.perf_counter() - start
    rows: dict[int | None, dict[str, Any]] = {}
    for task in executor.tasks:
        key = None if task.unit is None else task.unit.start_ns
        row = rows.setdefault(key, {"unit": task.unit, "census_mib": 0.0, "task_mib": 0.0, "task_before_result_mib": 0.0, "seconds": 0.0})
        row["seconds"] += task.seconds
        if task.label == "census":
            row["census_mib"] = task.peak_mib
        else:
            row["task_mib"], row["task_before_result_mib"] = task.peak_mib, task.task_peak_mib
    return list(rows.values()), reduced, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trace", type=Path, help="a normalised trace (coherence-diag normalize)")
    parser.add_argument("--budgets", default="0.5,1,2", help="unit budgets to plan with, GiB, comma-separated")
    parser.add_argument("--window", type=float, default=1.0, help="analysis window (s): units are whole windows")
    parser.add_argument("--cap-gib", type=float, default=6.0, help="kill a child whose resident set passes this")
    parser.add_argument("--with-layers", action="store_true", help="unit tasks as `analyze` runs them (also projected layers and row summary)")
    parser.add_argument("--factor", type=float, help="plan with this PEAK_PER_FOOTER_BYTE instead of plan.py's (to try a value)")
    args = parser.parse_args()

    from coherence_diag.scale import plan

    if args.factor:
        plan.PEAK_PER_FOOTER_BYTE = args.factor  # plan_units reads it when called (in this process)
    PEAK_PER_FOOTER_BYTE = plan.PEAK_PER_FOOTER_BYTE
    cap = int(args.cap_gib * 2**30)
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        workdir = Path(tmp)
        base = import_only_peak(workdir, cap)
        print(f"{args.trace}: PEAK_PER_FOOTER_BYTE = {PEAK_PER_FOOTER_BYTE:g}; a child importing the unit code peaks at {base:,.0f} MiB")
        for gib in (float(x) for x in args.budgets.split(",") if x):
            budget = int(gib * 2**30)
            units, reduced, wall = measure(args.trace, budget, args.window, workdir, cap, args.with_layers)
            print(f"\nbudget {gib:g} GiB ({budget / 2**20:,.0f} MiB): {len(reduced.plan.units)} units, {len(reduced.plan.over_budget)} over budget, "
                  f"{reduced.crossing_requests:,} crossing requests, {reduced.requests.height:,} requests, run_units {wall:.1f} s")
            print(f"{'unit [start, end) s':<24} {'estimate':>9} {'footer':>7} {'census':>7} {'task':>7} {'(before result)':>15} {'peak':>7} {'peak/est':>8} {'per byte':>8} {'s':>6}")
            ratios, per_byte = [], []
            for row in units:
                unit = row["unit"]
                peak = max(row["census_mib"], row["task_mib"])
                if unit is None:
                    name, estimate, footer, ratio, pb = "rows with a null ts", "-", "-", "-", "-"
                else:
                    est_mib = unit.peak_bytes / 2**20
                    footer_mib = est_mib / PEAK_PER_FOOTER_BYTE
                    ratios.append(peak / est_mib)
                    per_byte.append(peak / footer_mib)
                    span = f"[{unit.start_ns / 1e9:.0f}, {unit.end_ns / 1e9:.0f})"
                    name = span + (" over" if unit.over_budget else "")
                    estimate, footer, ratio, pb = f"{est_mib:,.0f}", f"{footer_mib:,.0f}", f"{ratios[-1]:.2f}", f"{per_byte[-1]:.1f}"
                print(f"{name:<24} {estimate:>9} {footer:>7} {row['census_mib']:>7,.0f} {row['task_mib']:>7,.0f} {row['task_before_result_mib']:>15,.0f} "
                      f"{peak:>7,.0f} {ratio:>8} {pb:>8} {row['seconds']:>6.1f}")
            if ratios:
                worst = max(max(row["census_mib"], row["task_mib"]) for row in units)
                print(f"peak/estimate: max {max(ratios):.2f}, median {statistics.median(ratios):.2f}; "
                      f"peak per footer byte: max {max(per_byte):.1f}, median {statistics.median(per_byte):.1f}; "
                      f"largest unit peak {worst:,.0f} MiB, {worst / (budget / 2**20):.0%} of the budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
