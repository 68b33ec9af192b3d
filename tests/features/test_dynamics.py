"""Dynamics features (bursts, retries, idle/overload oscillation) on hand-built series and traces."""

from __future__ import annotations

import numpy as np
import pytest

from coherence_diag import features
from coherence_diag.features.burst_amplification import burst_episodes, burst_mask
from coherence_diag.features.fleet import FleetWindows, fleet_windows, phases, queue_depth_grid, runs
from coherence_diag.features.retry_amplification import attempt_latency
from tests.features._ctx import context, gpu_exec, queue_sample, sched

S = 1_000_000_000


def _fw(arrivals, depth, timeouts=None, retries=None) -> FleetWindows:
    n = len(arrivals)
    zeros = np.zeros(n)
    return FleetWindows(
        w_ns=S,
        start_ns=np.arange(n, dtype=np.int64) * S,
        arrivals=np.asarray(arrivals, dtype=float),
        retries=zeros.copy() if retries is None else np.asarray(retries, dtype=float),
        timeouts=zeros.copy() if timeouts is None else np.asarray(timeouts, dtype=float),
        completions=zeros.copy(),
        latency_ms=np.full(n, np.nan),
        slowdown=np.full(n, np.nan),
        depth=None if depth is None else np.asarray(depth, dtype=float),
    )


def test_runs_join_short_gaps():
    mask = np.array([0, 1, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
    assert runs(mask) == [(1, 2), (4, 4), (7, 7)]
    assert runs(mask, max_gap=1) == [(1, 4), (7, 7)]
    assert runs(np.zeros(4, dtype=bool)) == []


def test_phases_need_min_run_and_merge_repeats():
    # idle 3, neutral 1, idle 2 (too short), overload 3, idle 3, overload 1 (too short)
    state = np.array([-1, -1, -1, 0, -1, -1, 1, 1, 1, -1, -1, -1, 1])
    assert phases(state, 3) == [-1, 1, -1]
    assert phases(state, 2) == [-1, 1, -1]  # the second idle run merges with the first
    assert phases(np.array([1, 1, -1, -1, 1, 1]), 2) == [1, -1, 1]


def test_burst_backlog_outlasts_the_burst():
    arrivals = [10] * 30 + [40, 40, 40] + [10] * 40
    depth = [0.0] * 30 + [30, 60, 90, 70, 50, 30, 10, 2, 0.5] + [0.0] * 34
    mask, med = burst_mask(_fw(arrivals, depth))
    assert med == 10 and mask.sum() == 3 and mask[30:33].all()
    (ep,) = burst_episodes(_fw(arrivals, depth))
    assert (ep.first, ep.last) == (30, 32)
    assert ep.settle == 38  # first window after the burst with depth <= median + 1 (pre-burst level 0)
    assert ep.excess == 90  # 3 windows x 30 above the median
    assert ep.peak_depth_excess == 90
    assert ep.peak_ratio == 4.0


def test_noise_is_not_a_burst_and_no_depth_means_no_episode():
    rng = np.random.default_rng(0)
    arrivals = rng.poisson(16, 600)
    mask, _ = burst_mask(_fw(arrivals, np.zeros(600)))
    assert mask.sum() == 0  # 2x the median and median + 4 sqrt(median) is far in the Poisson tail
    assert burst_episodes(_fw([10] * 30 + [40] * 3 + [10] * 30, None)) == []


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_step_up_in_demand_is_not_a_burst(seed):
    rng = np.random.default_rng(seed)
    # 120 s at 10/s, then 120 s at 25/s: the late windows sit far above the trace's median (about
    # 10-25) but not above the level of the minute around them.
    arrivals = np.concatenate([rng.poisson(10, 120), rng.poisson(25, 120)])
    mask, _ = burst_mask(_fw(arrivals, np.zeros(240)))
    assert mask.sum() == 0
    # A spike on the new level still is one.
    spiked = arrivals.copy()
    spiked[200:203] = 80
    mask, _ = burst_mask(_fw(spiked, np.zeros(240)))
    assert mask[200:203].all() and mask.sum() == 3


def test_bursts_hitting_a_running_backlog_merge():
    arrivals = [10] * 30 + [40, 40] + [10] * 3 + [40, 40] + [10] * 30
    depth = [0.0] * 30 + [50] * 12 + [0.0] * 25
    episodes = burst_episodes(_fw(arrivals, depth))
    assert len(episodes) == 1
    assert (episodes[0].first, episodes[0].last, episodes[0].settle) == (30, 36, 42)


def test_backlog_level_is_the_level_before_the_burst():
    # A standing queue of ~100 before the burst: the backlog has drained when it is back near 100.
    arrivals = [10] * 30 + [40, 40] + [10] * 30
    depth = [100.0] * 30 + [160, 180, 150, 120, 100] + [100.0] * 27
    (ep,) = burst_episodes(_fw(arrivals, depth))
    assert ep.settle == 34


def _retry_rows(with_attempt: bool) -> list[dict]:
    def a(n):
        return {"attempt": n} if with_attempt else {}

    rows = []
    for i in range(40):  # calm requests over 12 s, 0.5 s each
        t = 0.3 * i
        rows += [sched(f"c{i}", "arrive", t, slo_ms=5000.0, **a(0)), sched(f"c{i}", "complete", t + 0.5, **a(0))]
    # r1: times out after 2 s, retries, completes 1 s later; r2: times out twice
    rows += [
        sched("r1", "arrive", 1.0, slo_ms=5000.0, **a(0)),
        sched("r1", "timeout", 3.0, **a(0)),
        sched("r1", "retry", 3.5, **a(1)),
        sched("r1", "complete", 4.5, **a(1)),
        sched("r2", "arrive", 1.2, slo_ms=5000.0, **a(0)),
        sched("r2", "timeout", 4.2, **a(0)),
        sched("r2", "retry", 4.4, **a(1)),
        sched("r2", "timeout", 6.4, **a(1)),
    ]
    return rows


@pytest.mark.parametrize("with_attempt", [True, False])
def test_attempt_latency_pairs_each_start_with_its_outcome(tmp_path, with_attempt):
    ctx = context(tmp_path, _retry_rows(with_attempt))
    fw = fleet_windows(ctx)
    lat = attempt_latency(ctx, fw, q=1.0)  # max per window: exact attempt durations
    by_window = {int((s - fw.start_ns[0]) // S): v for s, v in zip(fw.start_ns, lat) if np.isfinite(v)}
    assert by_window[3] == pytest.approx(2000.0)  # r1 attempt 0 (1.0 -> 3.0)
    assert by_window[4] == pytest.approx(3000.0)  # r2 attempt 0 (1.2 -> 4.2); r1 attempt 1 is 1000 ms
    assert by_window[6] == pytest.approx(2000.0)  # r2 attempt 1 (4.4 -> 6.4)
    assert fw.retries.sum() == 2 and fw.timeouts.sum() == 3
    values = features.compute(ctx, {"retry_load_share", "retry_timeout_trigger_frac"}).values
    assert values["retry_load_share"] == pytest.approx(2 / 44)
    assert values["retry_timeout_trigger_frac"] == 1.0


def test_queue_depth_holds_between_samples(tmp_path):
    rows = [sched("r0", "arrive", 0.0, slo_ms=1000.0), sched("r0", "complete", 0.2)]
    rows += [queue_sample("q", "p", t, d) for t, d in ((0.0, 4), (1.0, 6), (9.0, 2))]
    grid = queue_depth_grid(context(tmp_path, rows, window_s=0.5))
    depth = grid.sort("window_start_ns")["depth"].to_list()
    # windows of 0.5 s from 0.0 to 9.0: a sample holds for 5 s (9 windows after it), then null
    assert depth[:3] == [4.0, 4.0, 6.0]
    assert depth[3:12] == [6.0] * 9
    assert depth[12:18] == [None] * 6
    assert depth[18] == 2.0


def test_pool_alternating_idle_and_overload_counts_cycles(tmp_path):
    rows = []
    # One device; 10 s overloaded (busy all window, queue 5), 10 s idle (no work, queue 0), 4 cycles.
    for cycle in range(4):
        t0 = cycle * 20
        for k in range(10):
            rid = f"r{cycle}-{k}"
            rows += [
                sched(rid, "arrive", t0 + k, slo_ms=10000.0),
                sched(rid, "dispatch", t0 + k, pool="p", device="g0"),
                gpu_exec(rid, "g0", t0 + k, 1000.0),
                sched(rid, "complete", t0 + k + 1.0),
            ]
        rows += [queue_sample("q", "p", t0 + k, 5) for k in range(10)]
        rows += [queue_sample("q", "p", t0 + 10 + k, 0) for k in range(10)]
    values = features.compute(context(tmp_path, rows), {"oscillation_cycles", "oscillation_idle_frac",
                                                         "oscillation_overload_frac", "oscillation_pools"}).values
    assert values["oscillation_cycles"] == 3  # overload, idle, overload, ... : three idle -> overload changes
    assert values["oscillation_overload_frac"] == pytest.approx(0.5, abs=0.05)
    assert values["oscillation_idle_frac"] == pytest.approx(0.5, abs=0.05)
    assert values["oscillation_pools"] == 1


def _paced_on_off(tick_s: float, cycles: int = 5) -> list[dict]:
    """A timer-paced dispatcher (a pass every tick_s): 10 s of 20 arrivals/s that queue for >= 1 s,
    then 10 s of 2 arrivals/s that wait only for the next pass. Scheduler rows only."""
    rows = []
    for c in range(cycles):
        t0 = 20.0 * c
        for k in range(200):  # overload: each dispatched at the first pass >= 1 s after arrival
            t = t0 + k * 0.05
            rid = f"on{c}-{k}"
            dispatch = (np.floor((t + 1.0) / tick_s) + 1) * tick_s
            rows += [sched(rid, "arrive", t, slo_ms=10_000.0), sched(rid, "dispatch", dispatch, pool="p"),
                     sched(rid, "complete", dispatch + 0.1)]
        for k in range(20):  # near idle: dispatched at the next pass
            t = t0 + 10.0 + k * 0.5 + 0.01
            rid = f"off{c}-{k}"
            dispatch = (np.floor(t / tick_s) + 1) * tick_s
            rows += [sched(rid, "arrive", t, slo_ms=10_000.0), sched(rid, "dispatch", dispatch, pool="p"),
                     sched(rid, "complete", dispatch + 0.1)]
    return rows


def test_waiting_for_a_paced_dispatchers_next_pass_is_not_overload(tmp_path):
    values = features.compute(
        context(tmp_path, _paced_on_off(tick_s=0.25)),
        {"oscillation_cycles", "oscillation_idle_frac", "oscillation_overload_frac", "dispatch_group_excess_ratio"},
    ).values
    assert values["dispatch_group_excess_ratio"] >= 2  # the passes release requests together
    # The near-idle phases count as idle although every request waited (for at most one tick).
    assert values["oscillation_cycles"] >= 3
    assert values["oscillation_idle_frac"] == pytest.approx(0.5, abs=0.1)
    assert values["oscillation_overload_frac"] == pytest.approx(0.5, abs=0.1)
