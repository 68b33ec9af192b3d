"""Stage-by-stage profile of `analyze` on one trace: wall, CPU and memory of each stage.

    python benchmarks/profile_analyze.py bench-data/healthy-10000000-s1.parquet [--groups]

Runs the stages of `analysis.analyze` one after the other in this process (the same calls, in
the same order, with the time series built before the feature groups so that their cost is
their own) and prints, per stage: wall seconds, CPU seconds of the process (user + sys, all
threads: on a shared machine less load-dependent than wall), the peak RSS reached during the
stage and the RSS after it. The peak of each stage is its own: the kernel's high-water mark
(VmHWM) is reset before every stage (`echo 5 > /proc/self/clear_refs`, Linux). `--groups` also
times each feature group and index computation on its own line. The bytes of the layers before
and after the projection (projection.py; `estimated_size` summed) are printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Profile:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float, float]] = []
        self.resettable = _reset_peak()
        self._open: list[int] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        # A stage inside another resets the high-water mark: the outer one keeps the larger of
        # its inner stages' peaks and its own since the last reset.
        if self._open:
            self._open[-1] = max(self._open[-1], _status_kib("VmHWM"))
        _reset_peak()
        self._open.append(0)
        wall, cpu = time.perf_counter(), _cpu_s()
        yield
        wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
        peak = max(self._open.pop(), _status_kib("VmHWM"))
        if self._open:
            self._open[-1] = max(self._open[-1], peak)
        self.rows.append((name, wall, cpu, peak / 1024, _status_kib("VmRSS") / 1024))

    def timed(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def run(*args: object, **kwargs: object) -> T:
            with self.stage(name):
                return fn(*args, **kwargs)

        return run

    def print(self) -> None:
        peak_note = "" if self.resettable else " (VmHWM not resettable here: peaks are cumulative)"
        print(f"{'stage':<40} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9} {'RSS MiB':>8}{peak_note}")
        for name, wall, cpu, peak, rss in self.rows:
            print(f"{name:<40} {wall:7.3f} {cpu:7.3f} {peak:9,.0f} {rss:8,.0f}")
        print(f"{'total':<40} {sum(r[1] for r in self.rows if not r[0].startswith('  ')):7.3f} "
              f"{sum(r[2] for r in self.rows if not r[0].startswith('  ')):7.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--groups", action="store_true", help="one line per feature group and index")
    args = parser.parse_args()

    from coherence_diag import analysis, features, indices, ingest, metrics, paths, projection  # imports before the first clock
    from coherence_diag.features import registry
    from coherence_diag.rules import engine
    from coherence_diag.rules.loader import load_rules

    prof = Profile()
    if args.groups:
        for name, group in list(registry.GROUPS.items()):
            registry.GROUPS[name] = dataclasses.replace(group, fn=prof.timed(f"  group {name}", group.fn))
    with prof.stage("open (metadata)"):
        source = ingest.open_trace(args.trace)
    # The single pass (analysis.read_single_pass) validates the layers one after the other and
    # takes what the analysis needs of each as soon as it is validated: its inner steps are
    # timed on lines of their own.
    paths.scheduler_lifecycle = prof.timed("  scheduler lifecycle", paths.scheduler_lifecycle)
    projection.project_layers = prof.timed("  projection", projection.project_layers)
    paths.finish_paths = prof.timed("  request paths (finish)", paths.finish_paths)
    with prof.stage("read + validate + request paths"):
        prepared = analysis.read_single_pass(source)
    trace, requests, span = prepared.trace, prepared.requests, prepared.summary.span
    del prepared
    projected_bytes = sum(frame.estimated_size() for frame in trace.layers.values())
    with prof.stage("metrics"):
        metric_values, _ = metrics.compute(requests, trace.layers, trace.columns, span)
    with prof.stage("feature context"):
        rules = load_rules([])
        ctx = features.FeatureContext.build(requests, trace.layers, trace.columns, metric_values, args.window)
    with prof.stage("time series"):
        ctx.series  # noqa: B018  built here so that its cost is not the first group's
    with prof.stage("feature groups"):
        wanted = set().union(*(r.features for r in rules)) | indices.FEATURES_USED
        values = features.compute(ctx, wanted)
    with prof.stage("indices"):
        indices.compute(ctx, values)
    with prof.stage("rules"):
        engine.evaluate(rules, values, ctx.columns, ctx.derived)
    prof.print()
    print(f"projected layers {projected_bytes / 2**20:,.1f} MiB; request table {requests.estimated_size() / 2**20:,.1f} MiB")
    # The high-water mark is reset before every stage, so getrusage's maximum is only the last
    # stage's: the process peak is the largest stage peak (where the reset works).
    peak = max(r[3] for r in prof.rows) if prof.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows {trace.rows_total:,}; process peak RSS {peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
