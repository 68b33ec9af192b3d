"""Benchmark: large traces (issue 12). Generates a 100M-row trace as shards in bounded memory
(10 tiled copies of the 10M-row bench slice), then measures what exists, each in a fresh child
process under a hard memory cap:

- tiling itself (the generator's own peak RSS);
- `normalize` of the 10M-row slice within each memory budget of --normalize-budgets (the
  external sort; its peak should stay within the budget plus ~250 MiB, docs/scale.md);
- `analyze` in-process (single pass) on the first 1, 2, ... shards and on all of them;
- `analyze` of all shards in work units (`--memory-budget`, a budget for the whole run, 6 GiB by
  default: the cap; in-process) and on a Dask
  LocalCluster of 1 and of 2 workers (`--scheduler local`; the client's peak RSS: the workers are
  other processes, each held by Dask's own per-worker memory limit).

    python benchmarks/bench_scale.py --copies 10 --cap-gib 6 --report docs/benchmarks.md
    python benchmarks/bench_scale.py --copies 0 --analyze "" --report docs/benchmarks.md  # normalize only

The cap: a watchdog thread reads the child's resident set (/proc/PID/status, VmRSS) every 20 ms
and kills its process group past --cap-gib; the run is then recorded as "over the cap" with the
time it ran, never as a result. This machine is shared: a full 100M-row in-process analysis
would need ~25 GB.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import ANALYZE_CHILD, DATA, REPO, append_row, make_trace  # noqa: E402  (the 10M slice, the results file)

MARKER = "<!-- bench-scale-results-end -->"

TILE_CHILD = r"""
import json, sys, time
from pathlib import Path
from coherence_diag.simulate.tiling import tile_trace
t = time.perf_counter()
tiled = tile_trace(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": tiled.rows}))
"""

NORMALIZE_CHILD = r"""
import json, sys, time
from pathlib import Path
from coherence_diag.scale.normalize import normalize
t = time.perf_counter()
done = normalize(sys.argv[1], Path(sys.argv[2]), budget_bytes=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": done.rows, "chunks": done.chunks}))
"""

UNITS_CHILD = r"""
import json, sys, time
import coherence_diag.analysis
from coherence_diag import analyze
from coherence_diag.render.json_report import render
from coherence_diag.scale.executors import executor
from coherence_diag.scale.read import ScaleOptions

def main():
    path, budget, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t = time.perf_counter()
    with executor("local" if workers else None, workers=workers or None) as run:
        result = analyze(path, scale=ScaleOptions(memory_budget_bytes=budget, executor=run if workers else None))
    render(result.report)
    print(json.dumps({"seconds": time.perf_counter() - t, "rows": result.report.trace.rows}))

if __name__ == "__main__":  # Dask spawns its workers
    main()
"""


def run_capped(child: str, args: list[str], cap_bytes: int) -> dict:
    """Run `child` in a fresh process; its wall time (inside), peak RSS (wait4) and whether the
    watchdog killed it at the cap."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", child, *args], stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    killed = threading.Event()
    done = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while not done.is_set():
            try:
                rss_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                return
            if rss_kib * 1024 > cap_bytes:
                killed.set()
                os.killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    watcher.join()
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    result = {"peak_rss_mib": usage.ru_maxrss / 1024, "elapsed_s": time.perf_counter() - start, "over_cap": killed.is_set()}
    if not killed.is_set():
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"benchmark child failed ({' '.join(args)}):\n{out}")
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def tiled_trace(slice_path: Path, copies: int, cap: int) -> tuple[Path, dict | None]:
    """The tiled trace in bench-data/ (cached: reused when all its shards exist)."""
    target = DATA / f"{slice_path.stem}-x{copies}"
    if target.is_dir() and len(list(target.glob("part-*.parquet"))) == copies:
        return target, None
    result = run_capped(TILE_CHILD, [str(slice_path), str(target), str(copies)], cap)
    if result["over_cap"]:
        raise SystemExit(f"tiling went over the {cap / 2**30:.0f} GiB cap: not bounded memory")
    return target, result


def first_shards(tiled: Path, n: int) -> Path:
    """A directory of links to the first `n` shards: the trace of n copies, without copying."""
    view = DATA / f"{tiled.name}-first{n}"
    view.mkdir(exist_ok=True)
    for shard in sorted(tiled.glob("part-*.parquet"))[:n]:
        link = view / shard.name
        if not link.exists():
            link.symlink_to(shard)
    return view


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the simulated slice")
    parser.add_argument("--copies", type=int, default=10, help="tiled copies of the slice (shards); 0: no tiled trace, normalize only")
    parser.add_argument("--analyze", default="1,2,10", help="analyze in-process the first N shards, for each N listed")
    parser.add_argument("--cap-gib", type=float, default=6.0, help="kill a child whose resident set passes this")
    parser.add_argument("--normalize-budgets", default="0.5,1,2", help="normalize the slice within each of these budgets (GiB)")
    parser.add_argument(
        "--memory-budget-gib",
        "--units-budget-gib",  # its name while the budget was per unit (2 GiB then)
        dest="memory_budget_gib",
        type=float,
        default=6.0,
        help="--memory-budget of the work-unit runs, for the whole run (6: the cap)",
    )
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    cap = int(args.cap_gib * 2**30)

    slice_path = make_trace(args.rows, "healthy", 1)
    slice_rows = pq.read_metadata(slice_path).num_rows
    rows: list[tuple[str, int, int, dict | None]] = []
    tiled = None
    if args.copies:
        tiled, tiling = tiled_trace(slice_path, args.copies, cap)
        if tiling is not None:
            rows.append((f"tile {args.copies} copies of the slice into shards (streaming)", tiling["rows"], args.copies, tiling))
    out = DATA / "normalized-slice.parquet"
    for gib in (float(x) for x in args.normalize_budgets.split(",") if x):
        budget = int(gib * 2**30)
        rows.append((f"normalize the slice, --memory-budget {gib:g}GiB", slice_rows, 1, run_capped(NORMALIZE_CHILD, [str(slice_path), str(out), str(budget)], cap)))
        out.unlink(missing_ok=True)
    if tiled is not None:
        for n in (int(x) for x in args.analyze.split(",") if x):
            n = min(n, args.copies)
            rows.append(("analyze in-process (single pass)", n * slice_rows, n, run_capped(ANALYZE_CHILD, [str(first_shards(tiled, n))], cap)))
        units_budget = int(args.memory_budget_gib * 2**30)
        everything = str(first_shards(tiled, args.copies))
        for workers, name in ((0, "in-process"), (1, "--scheduler local, 1 worker"), (2, "--scheduler local, 2 workers")):
            label = f"analyze in work units, --memory-budget {args.memory_budget_gib:g}GiB, {name}"
            rows.append((label, args.copies * slice_rows, args.copies, run_capped(UNITS_CHILD, [everything, str(units_budget), str(workers)], cap)))

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    for name, n_rows, shards, result in rows:
        if result is None:
            outcome, wall, peak = "not run", "-", "-"
        elif result["over_cap"]:
            outcome, wall, peak = f"over the {args.cap_gib:g} GiB cap: killed after {result['elapsed_s']:.0f} s", "-", f">{args.cap_gib * 1024:,.0f}"
        else:
            outcome, wall, peak = "ok" + (f" ({result['chunks']} chunks)" if "chunks" in result else ""), f"{result['seconds']:.1f}", f"{result['peak_rss_mib']:,.0f}"
        print(f"{name:58s} {n_rows:>12,} rows {shards:>3} shards  {wall:>8} s  {peak:>8} MiB  {outcome}")
        if args.report:
            append_row(args.report, MARKER, f"| {stamp} | {name} | {n_rows:,} | {shards} | {wall} | {peak} | {outcome} | {machine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
