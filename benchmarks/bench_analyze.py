"""Benchmark: `analyze` against `pl.read_parquet` of the whole trace, on large simulated traces.

    python benchmarks/bench_analyze.py --rows 10000000 --all-shapes --report docs/benchmarks.md

Three children, each run in a fresh process so that its peak RSS (from wait4) is its own:
`pl.read_parquet(path)` of the whole file (issue 12's yardstick), a scan of the trace's known
columns (the earlier reference), and `analyze` plus rendering the JSON report. Wall time is
measured inside the child around the work itself (interpreter start-up and imports excluded);
so is CPU time (user + sys of all the child's threads, from getrusage), which depends less than
wall time on what else runs on the machine. The children alternate within each of --repeat rounds (their
order rotating), and the median and the best of the rounds are reported.

Shapes (`--all-shapes`, what `make bench` runs; each trace simulated once into bench-data/):
SHAPES below. Targets (issue 12): analyze <= 2x read_parquet (medians), peak RSS <= 1.5 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench-data"

# Shape -> simulator scenario: the healthy fleet (disaggregated, one calm virtualized host), a
# virtualized fleet (a third of the decode hosts are VMs: ~8x the hypervisor samples) and a
# disaggregated fleet whose traffic leans on KV transfers (~1.5x the transfers per row).
SHAPES = {
    "healthy": "healthy",
    "virtualized": "virtualization-control-distortion",
    "disaggregated": "interconnect-capacity-inaccessibility",
}

READ_CHILD = r"""
import json, resource, sys, time
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + sys, all threads
import polars as pl
path = sys.argv[1]
t, c = time.perf_counter(), cpu()
df = pl.read_parquet(path)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": cpu() - c, "rows": df.height, "columns": df.width}))
"""

SCAN_CHILD = r"""
import json, resource, sys, time
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + sys, all threads
import polars as pl
from coherence_diag import schema
path = sys.argv[1]
cols = [c for c in pl.scan_parquet(path).collect_schema() if c in schema.COLUMNS]
t, c = time.perf_counter(), cpu()
df = pl.scan_parquet(path).select(cols).collect()
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": cpu() - c, "rows": df.height, "columns": len(cols)}))
"""

ANALYZE_CHILD = r"""
import json, resource, sys, time
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + sys, all threads
import coherence_diag.analysis  # imports (polars, scipy, rules) before the clock, as the scan child imports polars
from coherence_diag import analyze
from coherence_diag.render.json_report import render
t, c = time.perf_counter(), cpu()
result = analyze(sys.argv[1])
text = render(result.report)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": cpu() - c, "rows": result.report.trace.rows}))
"""


def make_trace(rows: int, scenario: str, seed: int) -> Path:
    from coherence_diag.simulate import simulate, write_trace

    DATA.mkdir(exist_ok=True)
    path = DATA / f"{scenario}-{rows}-s{seed}.parquet"
    if path.exists():
        return path
    probe_scale = 1.0
    probe = simulate(scenario, seed, scale=probe_scale)
    scale = probe_scale * rows / probe.height
    t = time.perf_counter()
    frame = simulate(scenario, seed, scale=scale)
    sim_s = time.perf_counter() - t
    write_trace(frame, path)
    print(f"simulated {frame.height:,} rows at scale {scale:.2f} in {sim_s:.1f} s -> {path}", file=sys.stderr)
    return path


def measure(child: str, path: Path) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed:\n{out}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def interleaved(children: list[str], path: Path, repeat: int) -> list[dict]:
    """Each child's runs over `repeat` rounds, the children alternating within each round and
    their order rotating between rounds: on a shared VM whose speed drifts over minutes, every
    child then meets the same conditions, in every position. Per child: the median and best
    wall time, the median CPU time, the largest peak RSS, and every run's time."""
    runs: list[list[dict]] = [[] for _ in children]
    for round_ in range(repeat):
        for k in range(len(children)):
            i = (k + round_) % len(children)
            runs[i].append(measure(children[i], path))
    results = []
    for child_runs in runs:
        results.append(
            {
                "rows": child_runs[0]["rows"],
                "columns": child_runs[0].get("columns"),
                "median_s": statistics.median(r["seconds"] for r in child_runs),
                "best_s": min(r["seconds"] for r in child_runs),
                "cpu_s": statistics.median(r["cpu_s"] for r in child_runs),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in child_runs),
                "all_seconds": [r["seconds"] for r in child_runs],  # in round order
            }
        )
    return results


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options of the benchmarks: which trace (simulated once into bench-data/, or given),
    how many rounds, where to append the results."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--scenario", default="healthy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trace", type=Path, help="benchmark this existing trace instead of simulating one")
    parser.add_argument("--report", type=Path, help="append the results to this Markdown file")
    return parser


TARGET_RATIO = 2.0
TARGET_RSS_MIB = 1536


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--all-shapes", action="store_true", help="every shape of SHAPES (what `make bench` runs)")
    args = parser.parse_args()
    if args.all_shapes and args.trace:
        parser.error("--all-shapes simulates its traces; --trace names one")
    if args.trace:
        traces = [(args.scenario, args.trace)]
    elif args.all_shapes:
        traces = [(shape, make_trace(args.rows, scenario, args.seed)) for shape, scenario in SHAPES.items()]
    else:
        traces = [(args.scenario, make_trace(args.rows, args.scenario, args.seed))]
    for shape, path in traces:
        bench_one(shape, path, args.repeat, args.report)
    return 0


def bench_one(shape: str, path: Path, repeat: int, report: Path | None) -> None:
    load_before = os.getloadavg()[0]  # 1-minute load average of the machine (other jobs included)
    read, scan, full = interleaved([READ_CHILD, SCAN_CHILD, ANALYZE_CHILD], path, repeat)
    load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    ratio = full["median_s"] / read["median_s"]
    # Each round's analyze over the same round's read: less sensitive to drifting load.
    paired = statistics.median(a / r for a, r in zip(full["all_seconds"], read["all_seconds"]))
    size_mib = path.stat().st_size / 2**20

    def line(name: str, r: dict) -> str:
        return (
            f"{name:<12}: median {r['median_s']:6.2f} s  best {r['best_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  "
            f"peak RSS {r['peak_rss_mib']:7,.0f} MiB   (runs: {', '.join(f'{x:.2f}' for x in r['all_seconds'])})"
        )

    rss_ok = full["peak_rss_mib"] <= TARGET_RSS_MIB
    print(
        "\n".join(
            [
                f"{shape}: {path.name}: {full['rows']:,} rows, {size_mib:,.0f} MiB Parquet, {read['columns']} columns "
                f"({scan['columns']} known); load average {load}",
                line("read_parquet", read),
                line("known scan", scan),
                line("analyze", full),
                f"ratio analyze / read_parquet: {ratio:.2f}x of medians, {paired:.2f}x paired, "
                f"{full['best_s'] / read['best_s']:.2f}x of bests (target <= {TARGET_RATIO:g}x); "
                f"analyze peak RSS {'within' if rss_ok else 'OVER'} {TARGET_RSS_MIB:,} MiB",
            ]
        ),
        flush=True,
    )
    if report:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        row = (
            f"| {stamp} | {shape} | {full['rows']:,} | {size_mib:,.0f} | {read['median_s']:.2f} / {read['best_s']:.2f} | "
            f"{read['peak_rss_mib']:,.0f} | {scan['median_s']:.2f} | {full['median_s']:.2f} / {full['best_s']:.2f} | "
            f"{full['cpu_s']:.1f} | {full['peak_rss_mib']:,.0f} | {ratio:.2f}x ({paired:.2f}x) | "
            f"{os.cpu_count()} cores, load {load}, Python {platform.python_version()} |"
        )
        append_row(report, "<!-- bench-shapes-end -->", row)


def append_row(report: Path, marker: str, row: str) -> None:
    """Add a table row to a Markdown file just above `marker` (at the end when it is absent)."""
    text = report.read_text() if report.exists() else ""
    if marker in text:
        text = text.replace(marker, row + "\n" + marker, 1)
    else:
        text += "\n" + row + "\n"
    report.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
