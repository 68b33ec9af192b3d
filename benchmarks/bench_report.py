"""Benchmark: `coherence-diag report` against `coherence-diag analyze` on the same large trace.

    python benchmarks/bench_report.py --rows 10000000 --report docs/benchmarks.md

The trace is `make bench`'s (benchmarks/bench_analyze.py simulates it once into bench-data/).
Four measurements, each in a fresh child process, alternating within each round (best of
--repeat rounds; a shared machine's speed drifts over minutes, so each round meets the same
conditions for all four):

- **CLI**, as a user runs them, wall time from process start to exit (interpreter start-up and
  imports included): `coherence-diag analyze TRACE --format json -o FILE` and
  `coherence-diag report TRACE --out DIR` (default jobs: the trace in this process, its charts
  in the chart process);
- **library**, imports done before the clock (as bench_analyze.py measures analyze):
  `analyze()` + the JSON text, and `build_reports([TRACE], DIR)`.

The ratio is given two ways: best report over best analyze, and the median over rounds of each
round's report / analyze (the two run back to back, their order alternating between rounds):
on a shared machine whose load drifts, the paired ratio is the steadier of the two.

Also: the size of the trace's HTML page (target < 2 MB) and peak RSS (the report's includes its
chart process). Target (issue 10): report <= 1.3x analyze.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import REPO, append_row, arguments, make_trace  # noqa: E402  (the benchmark trace, its location, the results file)

BIN = Path(sys.executable).parent

LIBRARY_ANALYZE = r"""
import json, sys, time
import coherence_diag.analysis
from coherence_diag import analyze
from coherence_diag.render.json_report import render
t = time.perf_counter()
text = render(analyze(sys.argv[1]).report)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

LIBRARY_REPORT = r"""
import json, sys, time
import coherence_diag.analysis, coherence_diag.reports
from coherence_diag.reports import build_reports
t = time.perf_counter()
result = build_reports([sys.argv[1]], sys.argv[2])
assert not result.failed, result.failed[0].error
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def run(argv: list[str]) -> dict:
    """Wall time (parent's clock, process start to exit), peak RSS of the process and its
    children (wait4), and the last stdout line parsed as JSON when there is one."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(argv)}\n{out}\n{err[-3000:]}")
    result = {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}
    lines = out.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    return result


def main() -> int:
    args = arguments(__doc__).parse_args()

    trace = args.trace or make_trace(args.rows, args.scenario, args.seed)
    load_before = os.getloadavg()[0]  # 1-minute load average of the machine (other jobs included)
    cli = str(BIN / "coherence-diag")
    names = ("cli analyze", "cli report", "lib analyze", "lib report")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    page_bytes = None
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for round_ in range(args.repeat):
            out = Path(tmp) / f"r{round_}"
            children = {
                "cli analyze": [cli, "analyze", str(trace), "--format", "json", "-o", str(Path(tmp) / "report.json"), "--no-progress"],
                "cli report": [cli, "report", str(trace), "--out", str(out / "cli"), "--no-progress"],
                "lib analyze": [sys.executable, "-c", LIBRARY_ANALYZE, str(trace)],
                "lib report": [sys.executable, "-c", LIBRARY_REPORT, str(trace), str(out / "lib")],
            }
            order = names if round_ % 2 == 0 else ("cli report", "cli analyze", "lib report", "lib analyze")
            for name in order:
                runs[name].append(run(children[name]))
            pages = [p for p in (out / "cli").glob("*.html") if p.name != "index.html"]
            page_bytes = pages[0].stat().st_size
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {runs[n][-1].get('seconds', runs[n][-1]['wall_s']):.2f} s" for n in names), file=sys.stderr)

    def best(name: str, key: str) -> float:
        return min(r[key] for r in runs[name])

    cli_a, cli_r = best("cli analyze", "wall_s"), best("cli report", "wall_s")
    lib_a, lib_r = best("lib analyze", "seconds"), best("lib report", "seconds")
    cli_paired = statistics.median(r["wall_s"] / a["wall_s"] for r, a in zip(runs["cli report"], runs["cli analyze"]))
    lib_paired = statistics.median(r["seconds"] / a["seconds"] for r, a in zip(runs["lib report"], runs["lib analyze"]))
    rss_a = max(r["peak_rss_mib"] for r in runs["cli analyze"])
    rss_r = max(r["peak_rss_mib"] for r in runs["cli report"])
    rows = pl_rows(trace)
    lines = [
        f"trace: {trace.name}: {rows:,} rows",
        f"CLI     analyze {cli_a:6.2f} s   report {cli_r:6.2f} s   ratio of bests {cli_r / cli_a:.2f}x, paired median {cli_paired:.2f}x (target <= 1.3x)",
        f"library analyze {lib_a:6.2f} s   report {lib_r:6.2f} s   ratio of bests {lib_r / lib_a:.2f}x, paired median {lib_paired:.2f}x",
        f"HTML page {page_bytes:,} bytes ({'under' if page_bytes < 2_000_000 else 'OVER'} 2 MB); peak RSS analyze {rss_a:,.0f} MiB, report {rss_r:,.0f} MiB",
        "all runs (s): " + "; ".join(f"{n}: " + ", ".join(f"{r.get('seconds', r['wall_s']):.2f}" for r in runs[n]) for n in names),
    ]
    print("\n".join(lines))
    if args.report:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        row = (
            f"| {stamp} | {args.scenario} | {rows:,} | {cli_a:.2f} | {cli_r:.2f} | {cli_r / cli_a:.2f}x ({cli_paired:.2f}x) | {lib_a:.2f} | "
            f"{lib_r:.2f} | {lib_r / lib_a:.2f}x ({lib_paired:.2f}x) | {page_bytes:,} | {rss_a:,.0f} / {rss_r:,.0f} | {os.cpu_count()} cores, "
            f"load {load_before:.1f}-{os.getloadavg()[0]:.1f}, Python {platform.python_version()} |"
        )
        append_row(args.report, "<!-- bench-report-results-end -->", row)
    return 0


def pl_rows(trace: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(trace).metadata.num_rows)


if __name__ == "__main__":
    sys.exit(main())
