"""Pass-by-pass profile of `normalize` on one trace: wall and peak RSS of each pass.

    python benchmarks/profile_normalize.py bench-data/healthy-10000000-s1.parquet --budget 1GiB

Runs `scale.normalize.normalize` in this process and cuts it into passes at its progress
messages: setup (opening the trace, the row-size sample), count, spill, and the sort of the
chunks (one line for all of them: the sum of their wall times and the largest of their
peaks). The peak of each pass is its own: the kernel's high-water mark (VmHWM) is reset at
every message (`echo 5 > /proc/self/clear_refs`, Linux), as profile_analyze.py does. The output
is written to a temporary directory and removed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_analyze import _reset_peak, _status_kib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--budget", default="1GiB", help="--memory-budget of normalize (e.g. 512MiB, 2GiB)")
    args = parser.parse_args()

    from coherence_diag.scale.normalize import normalize
    from coherence_diag.scale.plan import parse_bytes

    budget = parse_bytes(args.budget)
    imported_mib = _status_kib("VmRSS") / 1024
    passes: dict[str, list[float]] = {}  # pass -> [wall s, peak MiB]
    name, start = "setup", time.perf_counter()

    def close(message: str) -> None:
        nonlocal name, start
        wall, peak = time.perf_counter() - start, _status_kib("VmHWM") / 1024
        total = passes.setdefault(name, [0.0, 0.0])
        total[0], total[1] = total[0] + wall, max(total[1], peak)
        _reset_peak()
        name, start = _pass_of(message), time.perf_counter()

    resettable = _reset_peak()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.trace.parent) as tmp:
        done = normalize(args.trace, Path(tmp) / "normalized.parquet", budget_bytes=budget, progress=close)
        close("end")
    wall = time.perf_counter() - started

    note = "" if resettable else " (VmHWM not resettable here: peaks are cumulative)"
    print(f"normalize {args.trace} --memory-budget {args.budget}: {done.rows:,} rows, {done.chunks} chunk(s), {done.row_groups} row groups")
    print(f"{'pass':<12} {'wall s':>7} {'peak MiB':>9}{note}")
    for name, (seconds, peak) in passes.items():
        print(f"{name:<12} {seconds:7.2f} {peak:9,.0f}")
    peak = max(p for _, p in passes.values())
    print(f"{'total':<12} {wall:7.2f} {peak:9,.0f}  (budget {budget / 2**20:,.0f} MiB; after imports {imported_mib:,.0f} MiB; peak - budget {peak - budget / 2**20:+,.0f} MiB)")
    return 0


def _pass_of(message: str) -> str:
    for prefix, name in (("counting", "count"), ("spilling", "spill"), ("sorting chunk", "sort chunks"), ("sorting", "sort")):
        if message.startswith(prefix):
            return name
    return message


if __name__ == "__main__":
    sys.exit(main())
