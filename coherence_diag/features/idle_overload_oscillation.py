"""Idle / overload oscillation: pools that swing between idle and overloaded phases.

Read per pool from its queue depth and the busy time of its devices (fleet.py: pool_windows),
else from the fleet's arrivals and queue waits alone.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from coherence_diag.features.fleet import (
    BASE,
    MIN_FLEET_WINDOWS,
    fleet_windows,
    pacing_allowance_ms,
    phases,
    pool_windows,
    window_ns,
)
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.timeseries import window_start

IDLE_BUSY = 0.3  # a pool is idle in a window when its devices are busy less than this, queue empty,
OVERLOAD_BUSY = 0.85  # and overloaded when they are busy at least this with requests waiting.
MIN_PHASE_S = 5.0  # seconds a state must hold without interruption to count as a phase
OSC_REQUIRES = BASE  # pool queues and exec spans when present; else fleet arrivals and waits
IDLE_DEMAND = 0.3  # fleet fallback: a window is near-idle at <= this share of the p90 window's arrivals
# fleet fallback: shorter queue waits count as none (timestamp resolution); under a timer-paced
# dispatcher, waits up to one tick are the wait for its next pass, not for capacity.
MIN_WAIT_MS = 1.0
OVERLOAD_WAITED = 0.5  # fleet fallback: overloaded when at least this share of its arrivals had to queue

OSC_FEATURES = [
    FeatureSpec(
        "oscillation_cycles", "count",
        "Idle -> overload phase changes of the most oscillating pool. A pool is idle in a window when its "
        f"devices (all of the pool's devices) are busy < {IDLE_BUSY:.0%} of the window and its queues are empty, "
        f"overloaded when they are busy >= {OVERLOAD_BUSY:.0%} with requests waiting in its queues; a phase is "
        f">= {MIN_PHASE_S:g} s (at least 2 consecutive windows) in one state; neutral stretches between phases "
        "are skipped. Without per-pool queue samples and exec spans the fleet is read from its requests alone: "
        f"a window is near-idle when its fresh arrivals are <= {IDLE_DEMAND:.0%} of the p90 window and none of "
        f"them waited (more than {MIN_WAIT_MS:g} ms, or under a timer-paced dispatcher more than one dispatch tick), overloaded when >= {OVERLOAD_WAITED:.0%} of its arrivals had to queue (the detail "
        "`estimate` says which reading was used).",
        OSC_REQUIRES,
    ),
    FeatureSpec(
        "oscillation_cycles_per_min", "per_min",
        "oscillation_cycles per minute of that pool's observed span.",
        OSC_REQUIRES,
    ),
    FeatureSpec(
        "oscillation_idle_frac", "frac",
        "Share of the most oscillating pool's windows that are idle (definition under oscillation_cycles).",
        OSC_REQUIRES,
    ),
    FeatureSpec(
        "oscillation_overload_frac", "frac",
        "Share of the most oscillating pool's windows that are overloaded (definition under oscillation_cycles).",
        OSC_REQUIRES,
    ),
    FeatureSpec(
        "oscillation_pools", "count",
        "Pools with at least 3 idle -> overload cycles.",
        OSC_REQUIRES,
    ),
]


@feature_group("idle_overload_oscillation", OSC_FEATURES)
def oscillation_features(ctx: FeatureContext) -> GroupResult:
    names = [s.name for s in OSC_FEATURES]
    frame = pool_windows(ctx) if {"depth", "dur_ms"} <= ctx.columns else None
    w_s = window_ns(ctx) / 1e9
    min_run = max(2, math.ceil(MIN_PHASE_S / w_s - 1e-9))
    # Two readings of the same physics; the one that sees the oscillation counts. Per pool, idle
    # means devices mostly not executing; with continuous batching a device that runs a single
    # sequence looks busy, so the demand side (the fleet's arrivals and waits) is read too.
    per_pool = [] if frame is None else _pool_oscillations(frame, min_run)
    fleet = _fleet_oscillation(ctx, min_run)
    if fleet is not None:
        per_pool.append(fleet)
    if not per_pool:
        return GroupResult({n: None for n in names}, reasons={n: "too few arrival windows to see phases" for n in names})
    cycles, idle_frac, over_frac, n, pool = max(per_pool, key=lambda e: (e[0], min(e[1], e[2]), e[3], e[4]))
    estimate = (
        "fleet arrivals and queue waits (demand near idle vs most arrivals queueing)" if pool == FLEET
        else "pool queues and device busy time"
    )
    values = {
        "oscillation_cycles": float(cycles),
        "oscillation_cycles_per_min": float(cycles / (n * w_s / 60.0)),
        "oscillation_idle_frac": idle_frac,
        "oscillation_overload_frac": over_frac,
        "oscillation_pools": float(sum(1 for e in per_pool if e[0] >= 3)),
    }
    details = {
        "oscillation_cycles": {
            "oscillating_pool": pool,
            "estimate": estimate,
            "pools": [
                {"pool": p, "cycles": c, "idle_frac": round(i, 3), "overload_frac": round(o, 3)}
                for c, i, o, _, p in per_pool
            ],
        }
    }
    return GroupResult(values, details=details)


def _cycles(state: np.ndarray, min_run: int) -> int:
    seq = phases(state, min_run)
    return sum(1 for a, b in zip(seq, seq[1:]) if (a, b) == (-1, 1))


FLEET = "(fleet)"


def _fleet_oscillation(ctx: FeatureContext, min_run: int) -> tuple[int, float, float, int, str] | None:
    """The fleet as one pool, read from its requests: demand near idle vs arrivals that must queue."""
    fw = fleet_windows(ctx)
    if fw is None or fw.n < MIN_FLEET_WINDOWS:
        return None
    waited = (
        ctx.inference.lazy()
        .filter(pl.col("arrive_ns").is_not_null() & (pl.col("queue_wait_ms") > pacing_allowance_ms(ctx, MIN_WAIT_MS)))
        .group_by(window_start(pl.col("arrive_ns"), fw.w_ns).alias("w"))
        .agg(pl.len().cast(pl.Float64).alias("waited"))
    )
    per_w = (
        pl.LazyFrame({"w": fw.start_ns}).join(waited, on="w", how="left").sort("w").collect()["waited"].fill_null(0.0).to_numpy()
    )
    a = fw.arrivals
    peak = float(np.quantile(a, 0.9))
    if peak <= 0:
        return None
    idle = (a <= IDLE_DEMAND * peak) & (per_w == 0)
    over = (a > 0) & (per_w >= OVERLOAD_WAITED * np.maximum(a, 1.0))
    cycles = _cycles(np.where(over, 1, np.where(idle, -1, 0)), min_run)
    return cycles, float(idle.mean()), float(over.mean()), fw.n, FLEET


def _pool_oscillations(frame: pl.DataFrame, min_run: int) -> list[tuple[int, float, float, int, str]]:
    per_pool = []
    for (pool,), part in frame.group_by("pool", maintain_order=True):
        busy = part["busy"].to_numpy()
        depth = part["depth"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        sampled = np.isfinite(depth)
        if sampled.sum() < 10:
            continue
        idle = sampled & (busy < IDLE_BUSY) & (depth < 0.5)
        over = sampled & (busy >= OVERLOAD_BUSY) & (depth >= 1.0)
        n = int(sampled.sum())
        per_pool.append((_cycles(np.where(over, 1, np.where(idle, -1, 0)), min_run), float(idle[sampled].mean()),
                         float(over[sampled].mean()), n, str(pool)))
    return per_pool
