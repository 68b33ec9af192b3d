"""The work-unit planner: from a trace's footers (footers.py), time slices aligned to the analysis
windows, each small enough for a memory budget. A pure function: no file is opened here.

A unit is [start_ns, end_ns) on the epoch-aligned window grid (timeseries.window_start), so
the window partials of two units never share a window; it reads its rows with a predicate on
`ts`, plus the hypervisor rows of the look-back [read_from_ns, start_ns) that the steal as-of join
of its first dispatches needs (paths.ASOF_TOLERANCE_NS). The units cover the trace exactly:
contiguous, from the window holding the first `ts` to the end of the window holding the last.

Memory is estimated from the footers: a row group's uncompressed bytes (of the needed columns)
are spread evenly over its [ts_min, ts_max], and a unit's peak is PEAK_PER_FOOTER_BYTE times the
bytes it reads. One window that alone exceeds the budget becomes a unit of its own, flagged
`over_budget` (windows are not split: their partials would not be exact).

The user's `--memory-budget` is for the whole run (read.py), not for a unit: `RunEstimate` says,
from the footers' row counts, what the process holds besides the unit while units run (the
reserve, subtracted from the budget to give the units' own) and what the analysis after the
units holds; and what reading the trace in one pass needs, which decides between the two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from coherence_diag.errors import InputError
from coherence_diag.paths import ASOF_TOLERANCE_NS
from coherence_diag.scale.footers import FileFooter, RowGroup
from coherence_diag.timeseries import DEFAULT_WINDOW_S

# Measured on units (benchmarks/bench_units.py; docs/scale.md): on the 10,160,955-row bench trace
# normalised (213 MiB of uncompressed column chunks in its footer), a unit's census + unit_task,
# each in a fresh process, peaks at about 420 MiB + 12x the footer bytes it reads (3,254 MiB for
# the whole trace as one unit: 15x). 26 keeps every unit within its budget at 1 GiB (largest
# 935 MiB), 2 GiB (1,384) and 4 GiB (2,281); no factor can at 512 MiB, which the fixed part
# nearly fills (718 MiB at 26). Re-measure when unit tasks change.
PEAK_PER_FOOTER_BYTE = 26.0
# The whole run, on top of the units (RunEstimate). Fitted with benchmarks/profile_units_stages.py
# --unit-budget-gib (stage peaks from VmHWM; docs/scale.md, "The budget is for the whole run") on
# the tiled bench trace's first 2 shards (20.3M rows), all 10 (101.6M) and the three 10M-row bench
# traces. The reserve is the peak while units run less the units' budget, at the smallest budgets
# (1 GiB at 20M: 249 MiB; 2 GiB at 100M: 961 MiB, 1,088 in session 10): a line over both sessions.
# The analysis is the upper line over the peaks after the units: 10M 907-1,078 MiB, 20M 1,602,
# 100M 5,536-5,922 (more units, more crossing requests: the smallest budgets are the highest).
# Per trace row: these traces share one mix of layers, so a per-request term cannot be separated.
RESERVE_FIXED_BYTES = 64 * 2**20
RESERVE_PER_ROW_BYTES = 11.0  # 277 MiB at 20M rows, 1,130 MiB at 100M
ANALYSIS_FIXED_BYTES = 560 * 2**20
ANALYSIS_PER_ROW_BYTES = 56.0  # 1,095 MiB at 10M rows, 1,645 at 20M, 5,986 at 100M
# The single pass (analysis.read_single_pass, which validates and projects one layer at a time),
# refitted in session 13: peak RSS 1,360-1,414 MiB at 291-307 MiB of footer bytes (the three
# 10M-row bench traces, `make bench`, largest of 5 runs each), 2,177 MiB at 645 MiB (the tiled
# trace's first 2 shards, 20.3M rows) and 9,597 MiB at 3,227 MiB (all 10 shards, 101.6M rows; one
# run each, `--memory-budget 22GiB`). 640 MiB + 3x the footer bytes covers them by 9%, 18% and 8%;
# below ~28 MiB of footer bytes PEAK_PER_FOOTER_BYTE is the smaller and is kept.
ONE_PASS_FIXED_BYTES = 640 * 2**20
ONE_PASS_PER_FOOTER_BYTE = 3.0
# Below this, a unit is all fixed part (~420 MiB, above) and no budget can be kept: the smallest
# unit budget a whole-run budget is split into.
MIN_UNIT_BUDGET_BYTES = 512 * 2**20
# The planning grid has at most this many cells (a day at 1 ms windows would be 86M): beyond it,
# cells are whole multiples of the window, so slices stay aligned to windows.
MAX_CELLS = 1 << 20


@dataclass(frozen=True)
class Unit:
    start_ns: int  # inclusive, a multiple of the window
    end_ns: int  # exclusive, a multiple of the window
    read_from_ns: int  # start of the hypervisor look-back: start_ns - lookback_ns
    peak_bytes: float  # estimated peak memory: PEAK_PER_FOOTER_BYTE x (bytes in the slice + look-back)
    over_budget: bool  # one window alone exceeds the budget


@dataclass(frozen=True)
class UnitPlan:
    window_ns: int
    cell_ns: int  # the planning grid: a multiple of window_ns
    budget_bytes: int
    lookback_ns: int
    rows: int
    footer_bytes: int  # uncompressed bytes of the needed columns, over every row group
    units: tuple[Unit, ...]
    unplannable: str | None = None  # why the footers cannot be planned from (then no units)

    @property
    def over_budget(self) -> tuple[Unit, ...]:
        return tuple(u for u in self.units if u.over_budget)


@dataclass(frozen=True)
class RunEstimate:
    """What a whole `analyze` run of a trace is estimated to hold, from its footers' rows and
    bytes (the constants above): the budget given to the planner is the run's less `reserve_bytes`."""

    rows: int
    footer_bytes: int  # uncompressed bytes of every row group, as UnitPlan.footer_bytes of all columns
    # Units running at once on this machine, each within the units' budget: 1 in this process,
    # a local cluster's worker count (its workers' memory is the run's too; a remote cluster's
    # workers are on their own machines and each gets the budget as one unit would here).
    units_at_once: int = 1

    @property
    def reserve_bytes(self) -> float:
        """Held besides the running unit while units run: what the finished ones left."""
        return RESERVE_FIXED_BYTES + RESERVE_PER_ROW_BYTES * self.rows

    @property
    def analysis_bytes(self) -> float:
        """The peak of the analysis after the units (request table, layers read from disk, series)."""
        return ANALYSIS_FIXED_BYTES + ANALYSIS_PER_ROW_BYTES * self.rows

    @property
    def one_pass_bytes(self) -> float:
        """The trace read in one pass: its reading (the single pass's own line, or for small traces
        one unit of every footer byte, whichever is smaller), at least its analysis as in units."""
        reading = min(PEAK_PER_FOOTER_BYTE * self.footer_bytes, ONE_PASS_FIXED_BYTES + ONE_PASS_PER_FOOTER_BYTE * self.footer_bytes)
        return max(reading, self.analysis_bytes)

    @property
    def smallest_budget_bytes(self) -> int:
        """The smallest whole-run budget the estimate fits: one pass, or units of the smallest
        budget, then the analysis."""
        units = self.reserve_bytes + self._at_once * MIN_UNIT_BUDGET_BYTES
        return math.ceil(max(self.analysis_bytes, min(self.one_pass_bytes, units)))

    def unit_budget_bytes(self, budget_bytes: int) -> int:
        """Each unit's own budget within a run's `budget_bytes`: the budget less the reserve,
        shared by the units running at once (at least MIN_UNIT_BUDGET_BYTES)."""
        return max(MIN_UNIT_BUDGET_BYTES, int((budget_bytes - self.reserve_bytes) / self._at_once))

    def budget_for_unit_bytes(self, unit_peak_bytes: float) -> int:
        """The smallest whole-run budget whose units' budget holds a unit of `unit_peak_bytes`."""
        return math.ceil(self.reserve_bytes + self._at_once * unit_peak_bytes)

    @property
    def _at_once(self) -> int:
        return max(1, self.units_at_once)


def plan_units(
    footers: Iterable[FileFooter],
    *,
    budget_bytes: int,
    window_s: float = DEFAULT_WINDOW_S,
    lookback_ns: int = ASOF_TOLERANCE_NS,
    columns: Iterable[str] | None = None,
) -> UnitPlan:
    """Time slices of the trace whose footers are `footers`, each within `budget_bytes` (see the
    module doc). `columns`: the columns a unit reads (default: all)."""
    if budget_bytes <= 0 or not window_s > 0 or lookback_ns < 0:
        raise ValueError(f"budget_bytes > 0, window_s > 0 and lookback_ns >= 0 expected, got {budget_bytes}, {window_s}, {lookback_ns}")
    window_ns = int(round(window_s * 1e9))  # as timeseries.build
    footers = list(footers)
    wanted = None if columns is None else set(columns)
    groups = [g for f in footers for g in f.row_groups if g.rows]

    def empty(reason: str | None) -> UnitPlan:
        return UnitPlan(window_ns, window_ns, budget_bytes, lookback_ns, sum(g.rows for g in groups), 0, (), reason)

    if any(f.fmt != "parquet" for f in footers):
        return empty("CSV files have no statistics; `normalize` the trace first")
    timed = [g for g in groups if not g.ts_nulls_only]  # the others hold only rows of no slice
    if any(not g.has_ts_stats for g in timed):
        return empty("row groups without `ts` statistics; `normalize` the trace first")
    if not timed:
        return empty(None)

    size = np.array([_bytes(g, wanted) for g in timed], dtype=np.float64)
    lo = np.array([g.ts_min_ns for g in timed], dtype=np.int64)
    hi = np.array([g.ts_max_ns for g in timed], dtype=np.int64) + 1  # exclusive
    start = int(lo.min()) // window_ns * window_ns
    windows = -(-(int(hi.max()) - start) // window_ns)
    cell_ns = window_ns * max(1, math.ceil(windows / MAX_CELLS))
    cells = -(-(int(hi.max()) - start) // cell_ns)

    spread = _spread(lo - start, hi - start, size, cell_ns, cells)
    hyper = np.array([g.holds_layer("hypervisor") for g in timed])
    hyper_spread = _spread(lo[hyper] - start, hi[hyper] - start, size[hyper], cell_ns, cells) if hyper.any() else np.zeros(cells)

    # Prefix sums: bytes of cells [i, j) = P[j] - P[i]; the look-back of a unit starting at cell i
    # is the hypervisor bytes of the cells it touches (whole cells: an over-estimate, never under).
    prefix = np.concatenate([[0.0], np.cumsum(spread)])
    hyper_prefix = np.concatenate([[0.0], np.cumsum(hyper_spread)])
    back_cells = -(-lookback_ns // cell_ns)
    allowed = budget_bytes / PEAK_PER_FOOTER_BYTE
    units = []
    i = 0
    while i < cells:
        lookback = hyper_prefix[i] - hyper_prefix[max(0, i - back_cells)]
        # the last j with prefix[j] - prefix[i] + lookback <= allowed, at least one cell
        j = int(np.searchsorted(prefix, prefix[i] + allowed - lookback, side="right")) - 1
        j = min(max(j, i + 1), cells)
        read = prefix[j] - prefix[i] + lookback
        unit_start = start + i * cell_ns
        units.append(
            Unit(unit_start, start + j * cell_ns, unit_start - lookback_ns, float(read * PEAK_PER_FOOTER_BYTE), bool(read > allowed * (1 + 1e-9)))
        )
        i = j
    return UnitPlan(window_ns, cell_ns, budget_bytes, lookback_ns, sum(g.rows for g in groups), int(size.sum()), tuple(units))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """A memory size as a user writes it: `4GiB`, `512MiB`, `2G`, `1.5GB`, `1000000` (bytes).
    K/M/G/T are powers of 1024 with or without the `i` (as memory is sized), a bare number bytes."""
    found = _SIZE.match(text)
    if not found or float(found.group(1)) <= 0:
        raise InputError(f"--memory-budget {text!r}: expected a positive size such as 4GiB, 512MiB or 2G")
    return int(float(found.group(1)) * 1024 ** " KMGT".index(found.group(2).upper() or " "))


def _bytes(group: RowGroup, wanted: set[str] | None) -> int:
    return sum(n for c, n in group.bytes_by_column.items() if wanted is None or c in wanted)


def _spread(lo: np.ndarray, hi: np.ndarray, size: np.ndarray, cell_ns: int, cells: int) -> np.ndarray:
    """Each group's bytes spread evenly over its [lo, hi) (ns from the grid start) onto the cells.
    A loop over row groups (footer records, not rows); each adds to the cells it spans."""
    out = np.zeros(cells)
    first, last = lo // cell_ns, (hi - 1) // cell_ns
    for a, b, g_lo, g_hi, n in zip(first.tolist(), last.tolist(), lo.tolist(), hi.tolist(), size.tolist()):
        if a == b:
            out[a] += n
            continue
        edges = np.arange(a, b + 2, dtype=np.int64) * cell_ns
        overlap = np.minimum(edges[1:], g_hi) - np.maximum(edges[:-1], g_lo)
        out[a : b + 1] += n * overlap / (g_hi - g_lo)
    return out
