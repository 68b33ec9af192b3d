"""Whether a trace's file layout lets time and layer predicates skip row groups: a pure function
of its footers (footers.py).

A large trace is read in time slices (plan.py), each a `scan_parquet` with a predicate on `ts`;
Polars skips the row groups whose `ts` statistics lie outside the slice. That works only when
the rows are clustered by time (sorted by ts, or by layer then ts, as `normalize` writes), the
row groups carry statistics and are not huge. This module measures it: the read amplification
of cutting the trace into PROBE_SLICES equal time slices (rows read over all slices / rows;
1.0 = every row read once, PROBE_SLICES = every slice reads everything), and the same for
selecting each layer in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coherence_diag.scale.footers import FileFooter, RowGroup
from coherence_diag.schema import LAYERS

PROBE_SLICES = 16
# Larger row groups defeat skipping even when sorted: a predicate decodes a whole group to keep a few rows.
MAX_ROW_GROUP_ROWS = 1 << 20
# Below this many rows a full scan costs little (the shipped samples have < 110k): no note.
NOTE_MIN_ROWS = 1_000_000


@dataclass(frozen=True)
class Layout:
    rows: int  # rows the footers count (CSV files count 0: their rows are unknown until read)
    row_groups: int
    time_amplification: float | None  # rows read by PROBE_SLICES time slices / rows; None: cannot tell
    layer_amplification: float | None  # rows read selecting each present layer in turn / rows
    layers: int  # layers the statistics allow (of the trace format's five)
    problems: tuple[str, ...]  # why time predicates cannot skip row groups; empty when they can
    layer_problems: tuple[str, ...]  # why layer predicates cannot

    @property
    def time_skips(self) -> bool:
        return not self.problems

    @property
    def layer_skips(self) -> bool:
        return not self.layer_problems


def check_layout(footers: list[FileFooter]) -> Layout:
    groups = [g for f in footers for g in f.row_groups if g.rows or f.fmt != "parquet"]
    rows = sum(g.rows for g in groups)
    common: list[str] = []
    csv = [f.path for f in footers if f.fmt != "parquet"]
    if csv:
        common.append(f"{len(csv)} CSV file(s) (no statistics to skip by)")
    big = [g.rows for g in groups if g.rows > MAX_ROW_GROUP_ROWS]
    if big:
        common.append(f"{len(big)} row group(s) of more than {MAX_ROW_GROUP_ROWS:,} rows (largest {max(big):,})")
    problems, layer_problems = list(common), list(common)

    time_amp = None
    if csv:
        pass  # said above
    elif any(not g.has_ts_stats and not g.ts_nulls_only for g in groups):
        problems.append("row groups without `ts` statistics")
    elif timed := [g for g in groups if not g.ts_nulls_only]:
        time_amp = time_amplification(timed)
        if time_amp > PROBE_SLICES / 2:
            problems.append(f"rows not clustered by time (each 1/{PROBE_SLICES} of the time span reads {time_amp / PROBE_SLICES:.0%} of the rows)")

    present = [layer for layer in LAYERS if any(g.holds_layer(layer) for g in groups)]
    layer_amp = None
    if csv:
        pass
    elif any(not g.has_layer_stats for g in groups):
        layer_problems.append("row groups without `layer` statistics")
    elif rows:
        layer_amp = sum(sum(g.rows for g in groups if g.holds_layer(layer)) for layer in present) / rows
        if len(present) > 1 and layer_amp > (1 + len(present)) / 2:
            layer_problems.append(f"rows not clustered by layer (selecting one layer reads {layer_amp / len(present):.0%} of the rows)")
    return Layout(rows, len(groups), time_amp, layer_amp, len(present), tuple(problems), tuple(layer_problems))


def time_amplification(groups: list[RowGroup], slices: int = PROBE_SLICES) -> float:
    """Rows read when the time span is cut into `slices` equal slices, each reading the row
    groups whose [ts_min, ts_max] meets it, over the rows: >= 1 (each row read at least once)."""
    lo = np.array([g.ts_min_ns for g in groups], dtype=np.int64)
    hi = np.array([g.ts_max_ns for g in groups], dtype=np.int64)
    n = np.array([g.rows for g in groups], dtype=np.float64)
    if not n.sum():
        return 1.0
    edges = np.linspace(float(lo.min()), float(hi.max()) + 1.0, slices + 1)
    meets = (lo[:, None] < edges[None, 1:]) & (hi[:, None] >= edges[None, :-1])  # groups x slices
    return float((meets * n[:, None]).sum() / n.sum())


def full_scan_note(layout: Layout, rows: int, trace: str) -> str | None:
    """One line for the report's trace warnings when a large trace's layout forces full scans
    (None for traces under NOTE_MIN_ROWS rows, where a full scan costs little)."""
    if rows < NOTE_MIN_ROWS or layout.time_skips:
        return None
    return (
        f"layout: time slices of this trace cannot skip row groups ({'; '.join(layout.problems)}), so large-trace runs read it whole; "
        f"`coherence-diag normalize {trace} -o OUT.parquet` rewrites it sorted by (layer, ts) with row-group statistics"
    )
