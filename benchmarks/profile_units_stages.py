"""Stage-by-stage memory of `analyze` in work units (docs/scale.md, "Memory, honestly"):

    python benchmarks/profile_units_stages.py bench-data/healthy-10000000-s1-x10 --budget-gib 6
    python benchmarks/profile_units_stages.py bench-data/x10-first2 --unit-budget-gib 1

Runs `analysis.analyze` with a memory budget for the whole run (`--memory-budget`), or with the
units' own budget (`--unit-budget-gib`: no reserve, as the constants of scale/plan.py were fitted),
in work units with the layers on disk, and prints on stderr,
after each stage (the unit passes, the metrics, the feature context, each feature group, the
indices), the seconds since start, the RSS, and the peak RSS since the previous line (VmHWM,
reset after each line: `echo 5 > /proc/self/clear_refs`, Linux). Stage functions are wrapped in
this process only; nothing in the package changes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from coherence_diag import analysis, indices, metrics
from coherence_diag.features import registry
from coherence_diag.scale.read import ScaleOptions
from coherence_diag.scale.reduce import UnitTick

START = time.perf_counter()


def _status_mib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def log(message: str) -> None:
    print(
        f"{time.perf_counter() - START:7.1f} s  rss {_status_mib('VmRSS'):6,} MiB  peak since last {_status_mib('VmHWM'):6,} MiB  {message}",
        file=sys.stderr,
        flush=True,
    )
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def logged(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        log(f"  done {name}")
        return result

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--budget-gib", type=float, default=6.0, help="--memory-budget of the run (GiB)")
    parser.add_argument("--unit-budget-gib", type=float, help="the units' own budget instead (GiB; ScaleOptions.unit_budget_bytes)")
    args = parser.parse_args()
    for group in registry.GROUPS.values():
        object.__setattr__(group, "fn", logged(f"group {group.name}", group.fn))
    metrics.compute = logged("metrics", metrics.compute)  # type: ignore[assignment]
    indices.compute = logged("indices", indices.compute)  # type: ignore[assignment]
    build = registry.FeatureContext.build.__func__  # type: ignore[attr-defined]
    registry.FeatureContext.build = classmethod(logged("feature context", build))  # type: ignore[assignment,method-assign]

    def tick(t: UnitTick) -> None:
        if t.done == t.total:
            log(f"{t.stage} {t.done}/{t.total}")

    if args.unit_budget_gib is not None:
        options = ScaleOptions(unit_budget_bytes=int(args.unit_budget_gib * 2**30), progress=tick)
    else:
        options = ScaleOptions(memory_budget_bytes=int(args.budget_gib * 2**30), progress=tick)
    result = analysis.analyze(args.trace, scale=options, progress=log)
    log(f"analyzed: {result.report.trace.rows:,} rows, {result.report.trace.requests:,} requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
