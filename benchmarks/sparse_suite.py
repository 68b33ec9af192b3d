"""Score the rules on sparser copies of a labelled suite: what they can still tell when a trace
carries only what real serving stacks export.

    python benchmarks/sparse_suite.py ../shared/validation --report docs/accuracy-sparse.md

Each variant is a copy of every trace of the suite with layers and columns removed (written to a
temporary directory, deleted afterwards; the suite itself is only read) and the suite's labels,
scored with `coherence-diag rules score` (`scoring.score_suite`). The variants:

| variant | removed | stands for |
|---|---|---|
| full | nothing | the suite as labelled |
| no-queue | the `queue` layer | no queue-depth samples |
| no-profiling | `kv_cache_util`, `sm_active`, `mem_bw_util`, `predicted_ms`, `ttft_slo_ms` | DCGM without profiling counters, no scheduler prediction |
| vllm-like | the `queue`, `network` and `hypervisor` layers; `predicted_ms`, `sm_active`, `mem_bw_util`, `ttft_slo_ms`, `power_w`, `priority`, `attempt` | what a vLLM + basic DCGM capture gives |
| scheduler-only | every layer but `scheduler` | request lifecycles alone |
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from coherence_diag import scoring
from coherence_diag.outputs import write_atomic

VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name -> (layers dropped, columns dropped)
    "full": ((), ()),
    "no-queue": (("queue",), ()),
    "no-profiling": ((), ("kv_cache_util", "sm_active", "mem_bw_util", "predicted_ms", "ttft_slo_ms")),
    "vllm-like": (
        ("queue", "network", "hypervisor"),
        ("predicted_ms", "sm_active", "mem_bw_util", "ttft_slo_ms", "power_w", "priority", "attempt"),
    ),
    "scheduler-only": (("gpu", "queue", "network", "hypervisor"), ()),
}


def sparse_copy(suite: Path, out: Path, layers: tuple[str, ...], columns: tuple[str, ...]) -> None:
    """Copy every trace of `suite` (single Parquet or CSV files) into `out` without `layers` and
    `columns`, with the suite's labels.json (paths unchanged, relative to `out`)."""
    data = json.loads(scoring.labels_path(suite).read_text())
    for item in data["traces"]:
        src = suite / item["path"]
        frame = pl.read_parquet(src) if src.suffix == ".parquet" else pl.read_csv(src)
        frame = frame.filter(~pl.col("layer").is_in(list(layers))).drop([c for c in columns if c in frame.columns])
        dst = out / item["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(dst.with_suffix(".parquet"))
        item["path"] = str(Path(item["path"]).with_suffix(".parquet"))
    (out / "labels.json").write_text(json.dumps(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="a labelled suite (labels.json + traces)")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="only these (repeatable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    rows = []
    for name in args.variant or list(VARIANTS):
        layers, columns = VARIANTS[name]
        with tempfile.TemporaryDirectory(prefix=f"sparse-{name}-") as tmp:
            t = time.perf_counter()
            sparse_copy(args.suite, Path(tmp), layers, columns)
            result = scoring.score_suite(tmp, jobs=args.jobs)
            seconds = time.perf_counter() - t
        missed = sorted({r.rule for r in result.rules if r.f1 < 1})
        d = result.direction_counts
        row = (
            f"| {name} | {result.macro_f1:.3f} | {len(result.control_false_alarms)} | "
            f"{d['pass']}/{d['pass'] + d['fail'] + d['skipped']} | {', '.join(f'`{m}`' for m in missed) or '-'} |"
        )
        rows.append(row)
        print(row, f"({seconds:.0f} s)", file=sys.stderr, flush=True)
    text = "\n".join([
        f"Sparser copies of `{args.suite}` (benchmarks/sparse_suite.py; variants in its docstring), scored by "
        "`coherence-diag rules score` at severity >= medium.",
        "",
        "| variant | macro-F1 | control false alarms | index directions | rules below F1 1 |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    if args.report:
        write_atomic(args.report, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
