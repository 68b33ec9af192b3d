"""Burst amplification: arrival bursts whose backlog, waits and timeouts outlast the burst.

Read from the fleet series of fleet.py (fresh arrivals, timeouts, retries and the fleet queue
depth per window); thresholds are relative to the trace itself (its median arrival rate, the
backlog level before a burst).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from coherence_diag.features.fleet import (
    BASE,
    FEW_FLEET_WINDOWS,
    MIN_FLEET_WINDOWS,
    NO_DEPTH,
    FleetWindows,
    fleet_windows,
    iso,
    robust_center_spread,
    runs,
)
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import NS_PER_MS
from coherence_diag.timeseries import window_start

# A window is part of an arrival burst when its fresh arrivals reach both BURST_FACTOR x the
# median window and the median plus BURST_SIGMAS Poisson standard deviations (sqrt(median)), so
# that a quiet trace does not turn its counting noise into bursts.
BURST_FACTOR = 2.0
BURST_SIGMAS = 4.0
# ... and the same above the arrival level of the minute before it and of the minute after it
# (rolling medians, the larger of the two): a step in demand, up or down, moves the level for good
# and is not a burst, however far above the trace's median its windows sit; a spike stands above
# both of its sides.
LOCAL_LEVEL_S = 60.0
# A burst's backlog has drained when the fleet queue depth is back within SETTLE_SIGMAS robust
# standard deviations (and at most one request) of its median over the PRE_BURST_S before it.
SETTLE_SIGMAS = 3.0
PRE_BURST_S = 60.0
BURST_DEPTH = BASE  # queue depth samples, else the queue reconstructed from the scheduler rows

BURST_FEATURES = [
    FeatureSpec(
        "burst_episodes", "count",
        "Arrival bursts: runs of windows whose fresh (first-attempt) inference arrivals reach both "
        f"{BURST_FACTOR:g}x the median window and the median plus {BURST_SIGMAS:g} Poisson standard deviations "
        f"(sqrt(median)), and the same above the larger of the rolling medians of the {LOCAL_LEVEL_S:g} s before "
        "and after the window (a step in demand is not a burst); runs one window apart count as one burst.",
        BASE,
    ),
    FeatureSpec(
        "burst_time_frac", "frac",
        "Share of the arrival span's windows whose fresh arrivals reach the burst threshold of the trace's "
        "median (whatever the level around them): short spikes keep it small, a demand level that alternates "
        "or steps up does not.",
        BASE,
    ),
    FeatureSpec(
        "burst_arrival_ratio", "ratio",
        "Median over burst episodes of the episode's peak fresh arrivals per window / the median window. "
        "Null without a burst.",
        BASE,
    ),
    FeatureSpec(
        "burst_backlog_ratio", "ratio",
        "Backlog amplification: for each burst episode, the time from burst onset until the fleet queue depth "
        "(sum over queues of the mean sampled depth) is back within "
        f"{SETTLE_SIGMAS:g} robust standard deviations (and at most 1 request) of its median over the "
        f"{PRE_BURST_S:g} s before the burst, divided by the burst's own duration; mean over episodes weighted "
        "by their arrival excess. 1: the backlog lasted no longer than the burst. 0 without a burst.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_backlog_excess_ratio", "ratio",
        "Peak fleet queue depth above its pre-burst median during a burst episode and its backlog / the "
        "episode's fresh-arrival excess over the median rate (requests): the share of the spike that ended "
        "up waiting at the peak; maximum over episodes, 0 without a burst.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_wait_amplification", "ratio",
        "Latency shockwave at the point of entry: p90 queue wait before first dispatch of the inference "
        "requests that arrived during burst episodes or their backlog (dispatched ones) / the median "
        "end-to-end latency of completed requests that arrived outside them. Below 1 the burst cost less "
        "waiting than one typical request lifetime. 0 without a burst.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_timeout_share", "frac",
        "Share of all inference timeouts (scheduler timeout rows, by their time) that fall inside burst "
        "episodes or their backlog. 0 without a burst or without timeouts.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_timeout_rate", "frac",
        "Inference timeouts inside burst episodes and their backlog / fresh arrivals in the same windows. "
        "0 without a burst.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_retry_load_share", "frac",
        "Retry attempts / all attempts (fresh arrivals + retries) inside burst episodes and their backlog: "
        "near 0 when arrivals, not retries, carry the load. 0 without a burst.",
        BURST_DEPTH,
    ),
    FeatureSpec(
        "burst_downstream_ratio", "ratio",
        "Downstream wave: mean busy fraction of decode-side devices (devices that serve decode but not "
        "prefill on disaggregated paths) during burst episodes and their backlog / their median busy "
        "fraction outside them. Null without disaggregated paths or without a burst.",
        BURST_DEPTH + ("dur_ms",),
    ),
]


@dataclass
class BurstEpisode:
    first: int  # first and last burst window (indices into FleetWindows)
    last: int
    settle: int  # first window after the backlog drained (fw.n when it never did: censored)
    excess: float  # fresh arrivals above the median rate over the burst windows
    peak_ratio: float | None
    peak_depth_excess: float


def _spike_threshold(level: np.ndarray | float) -> np.ndarray:
    level = np.asarray(level, dtype=float)
    return np.maximum(BURST_FACTOR * level, level + BURST_SIGMAS * np.sqrt(np.maximum(level, 1.0)))


def _trace_median(fw: FleetWindows) -> float:
    a = fw.arrivals
    core = a[1:-1] if fw.n > 12 else a  # the first and last windows are partial
    return float(np.median(core))


def high_demand_mask(fw: FleetWindows) -> np.ndarray:
    """Windows whose fresh arrivals spike above the trace's median: how much of the time demand
    sits far above its typical level (bursts, or a level that alternates or steps up)."""
    return fw.arrivals >= _spike_threshold(_trace_median(fw))


def burst_mask(fw: FleetWindows) -> tuple[np.ndarray, float]:
    """Burst windows (above the trace's median and above the level of the minute before and the
    minute after them) and the median fresh arrivals per window."""
    a = fw.arrivals
    med = _trace_median(fw)
    span = max(5, round(LOCAL_LEVEL_S * 1e9 / fw.w_ns))
    series = pl.Series(a.astype(float))
    before = series.rolling_median(span, min_samples=1).shift(1)
    after = series.reverse().rolling_median(span, min_samples=1).shift(1).reverse()
    local = pl.DataFrame({"b": before, "a": after}).select(pl.max_horizontal("b", "a")).to_series()
    level = local.fill_null(med).to_numpy()
    return (a >= _spike_threshold(med)) & (a >= _spike_threshold(level)), med


def burst_episodes(fw: FleetWindows) -> list[BurstEpisode]:
    """Burst episodes with their backlog (needs the queue depth); overlapping backlogs merged."""
    mask, med = burst_mask(fw)
    if fw.depth is None:
        return []
    d = fw.depth
    gmed, gspread = robust_center_spread(d[np.isfinite(d)])
    pre = max(5, int(round(PRE_BURST_S * 1e9 / fw.w_ns)))
    episodes: list[BurstEpisode] = []
    busy_until = 0  # the previous backlog's end: not part of the next burst's baseline
    for first, last in runs(mask, max_gap=1):
        before = d[max(busy_until, first - pre) : first]
        before = before[np.isfinite(before)]
        dmed, dspread = robust_center_spread(before) if before.size >= 5 else (gmed, gspread)
        level = dmed + max(SETTLE_SIGMAS * dspread, 1.0)
        after = d[last + 1 :]
        settled = np.flatnonzero(np.isfinite(after) & (after <= level))
        settle = last + 1 + int(settled[0]) if settled.size else fw.n
        seg = d[first:settle]
        seg = seg[np.isfinite(seg)]
        busy_until = max(busy_until, settle)
        a = fw.arrivals[first : last + 1]
        episodes.append(
            BurstEpisode(
                first=first,
                last=last,
                settle=settle,
                excess=float(np.clip(a - med, 0.0, None).sum()),
                peak_ratio=float(a.max() / med) if med > 0 else None,
                peak_depth_excess=max(float(seg.max() - dmed), 0.0) if seg.size else 0.0,
            )
        )
    merged: list[BurstEpisode] = []
    for ep in episodes:
        if merged and ep.first < merged[-1].settle:  # this burst hit the previous one's backlog
            prev = merged[-1]
            ratios = [r for r in (prev.peak_ratio, ep.peak_ratio) if r is not None]
            merged[-1] = BurstEpisode(
                prev.first, ep.last, max(prev.settle, ep.settle), prev.excess + ep.excess,
                max(ratios) if ratios else None, max(prev.peak_depth_excess, ep.peak_depth_excess),
            )
        else:
            merged.append(ep)
    return merged


def _wait_amplification(ctx: FeatureContext, fw: FleetWindows, span: np.ndarray) -> float | None:
    in_span = pl.DataFrame({"w": fw.start_ns[span]})
    # Lazy, so that only the columns read are gathered (an eager filter copies every column).
    inf = ctx.inference.lazy().filter(pl.col("arrive_ns").is_not_null()).select(
        window_start(pl.col("arrive_ns"), fw.w_ns).alias("w"), "dispatch_ns", "outcome", "queue_wait_ms", "latency_ms"
    )
    inside, outside = pl.collect_all([
        inf.join(in_span.lazy(), on="w", how="semi").filter(pl.col("dispatch_ns").is_not_null()).select("queue_wait_ms"),
        inf.join(in_span.lazy(), on="w", how="anti").filter(pl.col("outcome") == "completed").select("latency_ms"),
    ])
    if inside.height == 0 or outside.height < 10:
        return None
    wait_p90 = inside["queue_wait_ms"].fill_null(0.0).quantile(0.9)
    base = outside["latency_ms"].median()
    if wait_p90 is None or not base:
        return None
    return float(wait_p90 / base)


def decode_only_devices(ctx: FeatureContext) -> pl.Series | None:
    """Devices (Categorical) that run the decode side of disaggregated paths and never prefill."""
    inf = ctx.inference
    decode = inf.lazy().filter(pl.col("decode_dispatch_ns").is_not_null()).select("decode_device").collect().to_series()
    decode = decode.drop_nulls().unique()
    if decode.len() == 0:
        return None
    decode = decode.filter(~decode.is_in(inf["prefill_device"].drop_nulls().unique().implode()))
    return decode if decode.len() else None


def _decode_busy(ctx: FeatureContext, fw: FleetWindows) -> np.ndarray | None:
    """Mean busy fraction per window of decode-only devices."""
    devices = decode_only_devices(ctx)
    if devices is None or ctx.series.devices.is_empty():
        return None
    per_w = (
        ctx.series.devices.lazy()
        .filter(pl.col("device").is_in(devices.implode()))
        .group_by("window_start_ns")
        .agg(pl.col("busy_ms").sum())
    )
    busy = (
        pl.LazyFrame({"window_start_ns": fw.start_ns})
        .join(per_w, on="window_start_ns", how="left")
        .sort("window_start_ns")
        .collect()["busy_ms"]
        .fill_null(0.0)
        .to_numpy()
    )
    return busy / (devices.len() * fw.w_ns / NS_PER_MS)


@feature_group("burst_amplification", BURST_FEATURES)
def burst_features(ctx: FeatureContext) -> GroupResult:
    names = [s.name for s in BURST_FEATURES]
    values: dict[str, float | None] = {n: None for n in names}
    fw = fleet_windows(ctx)
    if fw is None or fw.n < MIN_FLEET_WINDOWS:
        return GroupResult(values, reason=FEW_FLEET_WINDOWS)
    values["burst_time_frac"] = float(high_demand_mask(fw).mean())
    values["burst_episodes"] = float(len(runs(burst_mask(fw)[0], max_gap=1)))
    if fw.depth is None:
        return GroupResult(values, reason=NO_DEPTH)
    episodes = burst_episodes(fw)
    if not episodes:
        for name in ("burst_backlog_ratio", "burst_backlog_excess_ratio", "burst_wait_amplification",
                     "burst_timeout_share", "burst_timeout_rate", "burst_retry_load_share"):
            values[name] = 0.0
        return GroupResult(values, reason="no burst in this trace")
    span = np.zeros(fw.n, dtype=bool)
    for ep in episodes:
        span[ep.first : ep.settle] = True
    ratios = np.array([(ep.settle - ep.first) / (ep.last - ep.first + 1) for ep in episodes])
    weights = np.array([max(ep.excess, 1e-9) for ep in episodes])
    total_timeouts = fw.timeouts.sum()
    span_arrivals = fw.arrivals[span].sum()
    span_attempts = span_arrivals + fw.retries[span].sum()
    decode = _decode_busy(ctx, fw)
    if decode is not None and (~span).sum() >= 5:
        base = float(np.median(decode[~span]))
        values["burst_downstream_ratio"] = float(decode[span].mean() / base) if base > 0 else None
    peak_ratios = [ep.peak_ratio for ep in episodes if ep.peak_ratio is not None]
    values.update(
        burst_arrival_ratio=float(np.median(peak_ratios)) if peak_ratios else None,
        burst_backlog_ratio=float(np.average(ratios, weights=weights)),
        burst_backlog_excess_ratio=max(ep.peak_depth_excess / ep.excess if ep.excess > 0 else 0.0 for ep in episodes),
        burst_wait_amplification=_wait_amplification(ctx, fw, span),
        burst_timeout_share=float(fw.timeouts[span].sum() / total_timeouts) if total_timeouts > 0 else 0.0,
        burst_timeout_rate=float(fw.timeouts[span].sum() / span_arrivals) if span_arrivals > 0 else 0.0,
        burst_retry_load_share=float(fw.retries[span].sum() / span_attempts) if span_attempts > 0 else 0.0,
    )
    w_s = fw.w_ns / 1e9
    largest = sorted(sorted(episodes, key=lambda ep: -ep.excess)[:5], key=lambda ep: ep.first)
    detail = {
        "queue_depth_source": fw.depth_source,
        "bursts": [
            {
                "start": iso(int(fw.start_ns[ep.first])),
                "burst_s": round((ep.last - ep.first + 1) * w_s, 3),
                "backlog_s": round((ep.settle - ep.first) * w_s, 3),
                "peak_arrival_ratio": None if ep.peak_ratio is None else round(ep.peak_ratio, 2),
                "peak_queue_excess": round(ep.peak_depth_excess, 1),
                "timeouts": int(fw.timeouts[ep.first : ep.settle].sum()),
            }
            for ep in largest
        ]
    }
    return GroupResult(values, details={"burst_backlog_ratio": detail}, reasons={
        "burst_arrival_ratio": "the median window has no fresh arrivals",
        "burst_wait_amplification": "no dispatched request arrived in a burst or its backlog, or fewer than 10 "
        "completed requests arrived outside them",
        "burst_downstream_ratio": "no decode-only devices (no disaggregated paths), fewer than 5 windows outside "
        "the bursts, or those devices idle there",
    })
