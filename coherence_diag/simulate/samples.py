"""Write one small trace per scenario plus `labels.json` (the ground truth for each file).

    python -m coherence_diag.simulate.samples sample_traces [--seed 0]

The output is deterministic: same seed, same files, same labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from coherence_diag.outputs import write_atomic
from coherence_diag.errors import InputError
from coherence_diag.simulate.api import simulate
from coherence_diag.simulate.scenarios import SCENARIOS
from coherence_diag.simulate.writer import write_trace

LABELS_SCHEMA = "coherence-diag-sample-labels/1"


def write_samples(out_dir: Path, seed: int = 0) -> dict[str, object]:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, sc in SCENARIOS.items():
        df = simulate(name, seed)
        file = f"{name}.parquet"
        write_trace(df, out_dir / file)
        entries.append(
            {
                "file": file,
                "scenario": name,
                "kind": sc.kind,
                "expected_rule": sc.expected_rule,
                "description": sc.description,
                "seed": seed,
                "rows": df.height,
                "requests": int(df.filter((df["event"] == "arrive") & (df["attempt"] == 0) & (df["workload_class"] == "inference")).height),
            }
        )
    labels: dict[str, object] = {
        "schema": LABELS_SCHEMA,
        "generator": "coherence_diag.simulate",
        "regenerate": f"make samples  (python -m coherence_diag.simulate.samples sample_traces --seed {seed})",
        "traces": entries,
    }
    _write_json_atomic(out_dir / "labels.json", labels)
    return labels


def _write_json_atomic(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("sample_traces"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        labels = write_samples(args.out_dir, args.seed)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(labels['traces'])} traces and labels.json to {args.out_dir}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
