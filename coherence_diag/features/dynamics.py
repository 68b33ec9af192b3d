"""Serving dynamics: arrival bursts and their amplification, retry storms, idle/overload cycles.

Everything here is read from windowed fleet series built from the request paths, the scheduler
layer and the windowed time series (window = `--window`, default 1 s):

- fresh arrivals: first attempts by `arrive_ns`; retries are counted apart (`retry` rows and
  `arrive` rows with `attempt > 0`), so arrival excess and retry load are never mixed;
- timeouts: scheduler `timeout` rows by their own timestamp (when the client gave up);
- backlog: the sum over queues of the mean sampled `depth` (a sample holds until the next one,
  for at most DEPTH_HOLD_S, so windows shorter than the sampling interval still see the queue);
- per-pool busy fraction: the union of a pool's exec spans over all of the pool's devices.

Thresholds are relative to the trace itself (its median arrival rate, the backlog level before
a burst, a pool's own size, calm versus storm windows); nothing depends on entity names, on the
time origin, or on which optional columns a trace carries beyond those a feature declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl
from scipy import stats

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import NS_PER_MS, is_inference
from coherence_diag.timeseries import window_start

BASE = ("request_id",)

DEPTH_HOLD_S = 5.0  # a queue-depth sample describes its queue until the next one, at most this long


# ------------------------------------------------------------------------------------------
# Shared helpers (also used by energy.py and service.py)
# ------------------------------------------------------------------------------------------


def window_ns(ctx: FeatureContext) -> int:
    return max(1, int(round(ctx.window_s * 1e9)))


def iso(ns: int) -> str:
    seconds, rem = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 1000:06d}Z"


def robust_center_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD (a standard deviation that ignores outlying windows)."""
    if values.size == 0:
        return math.nan, math.nan
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation over the windows where both are finite; None when too short or constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 8 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    rho = stats.spearmanr(x, y).statistic
    return float(rho) if np.isfinite(rho) else None


def runs(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) index of the runs of True, joining runs separated by at most `max_gap` Falses."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return list(zip(starts.tolist(), ends.tolist()))


def retry_attempts(ctx: FeatureContext) -> pl.DataFrame | None:
    """One row per retry attempt (request_id, ts): `retry` rows and `arrive` rows with attempt > 0."""
    sched = ctx.layer("scheduler")
    if sched is None:
        return None
    cond = pl.col("event") == "retry"
    if "attempt" in sched.columns:
        cond = cond | ((pl.col("event") == "arrive") & (pl.col("attempt") > 0))
        return sched.filter(cond).group_by("request_key", "attempt").agg(pl.col("ts").min()).select("request_key", "ts")
    return sched.filter(cond).select("request_key", "ts")


def queue_depth_grid(ctx: FeatureContext) -> pl.DataFrame | None:
    """(queue, pool, window_start_ns, depth): each queue's mean sampled depth on a dense window grid
    over its sampled span; a window without a sample takes the previous one (for at most
    DEPTH_HOLD_S), later windows stay null."""
    queues = ctx.series.queues
    if queues.is_empty():
        return None
    w = ctx.series.window_ns
    hold = max(0, math.ceil(DEPTH_HOLD_S * 1e9 / w - 1e-9) - 1)
    q = queues.select(
        pl.col("queue").cast(pl.String), pl.col("pool").cast(pl.String), "window_start_ns", pl.col("depth_mean").cast(pl.Float64)
    )
    span = q.group_by("queue").agg(
        pl.col("pool").drop_nulls().min(),
        pl.col("window_start_ns").min().alias("lo"),
        pl.col("window_start_ns").max().alias("hi"),
    )
    grid = (
        span.with_columns(pl.int_ranges("lo", pl.col("hi") + w, w, dtype=pl.Int64).alias("window_start_ns"))
        .explode("window_start_ns")
        .select("queue", "pool", "window_start_ns")
    )
    return (
        grid.join(q.select("queue", "window_start_ns", "depth_mean"), on=["queue", "window_start_ns"], how="left")
        .sort("queue", "window_start_ns")
        .with_columns(pl.col("depth_mean").fill_null(strategy="forward", limit=hold).over("queue").alias("depth"))
        .select("queue", "pool", "window_start_ns", "depth")
    )


def _sum_or_null(col: str) -> pl.Expr:
    return pl.when(pl.col(col).count() > 0).then(pl.col(col).sum()).otherwise(None)


@dataclass
class FleetWindows:
    """Fleet-wide series on a dense grid of windows (index k covers [start_ns[k], start_ns[k] + w_ns))."""

    w_ns: int
    start_ns: np.ndarray
    arrivals: np.ndarray  # fresh (first-attempt) inference arrivals
    retries: np.ndarray  # retry attempts of inference requests
    timeouts: np.ndarray  # timeout rows of inference requests, by their timestamp
    completions: np.ndarray
    latency_ms: np.ndarray  # median end-to-end latency of the window's completions (nan: none)
    slowdown: np.ndarray  # median latency / predicted_ms of the window's completions (nan: none)
    depth: np.ndarray | None  # sum over queues of their depth (nan: no queue sampled)
    depth_source: str | None = None  # "queue samples" or how the depth was reconstructed

    @property
    def n(self) -> int:
        return int(self.start_ns.size)


def fleet_windows(ctx: FeatureContext) -> FleetWindows | None:
    """The fleet series over the span of fresh arrivals, built once per context."""
    return ctx.shared("dynamics.fleet_windows", lambda: _build_fleet_windows(ctx))


def _build_fleet_windows(ctx: FeatureContext) -> FleetWindows | None:
    w = window_ns(ctx)
    inf = ctx.inference
    arr = inf.lazy().filter(pl.col("arrive_ns").is_not_null())
    lo, hi = arr.select(window_start(pl.col("arrive_ns"), w).min().alias("lo"), window_start(pl.col("arrive_ns"), w).max().alias("hi")).collect().row(0)
    if lo is None:
        return None

    def counts(rows: pl.LazyFrame, col: str, name: str) -> pl.LazyFrame:
        return rows.group_by(window_start(pl.col(col), w).alias("w")).agg(pl.len().cast(pl.Int64).alias(name))

    parts = [
        counts(arr, "arrive_ns", "arrivals"),
        inf.lazy()
        .filter((pl.col("outcome") == "completed") & pl.col("complete_ns").is_not_null())
        .group_by(window_start(pl.col("complete_ns"), w).alias("w"))
        .agg(
            pl.len().cast(pl.Int64).alias("completions"),
            pl.col("latency_ms").median(),
            pl.when(pl.col("predicted_ms") > 0).then(pl.col("latency_ms") / pl.col("predicted_ms")).median().alias("slowdown"),
        ),
    ]
    sched = ctx.layer("scheduler")
    if sched is not None:
        # Inference requests are all but the (few) batch jobs.
        batch = ctx.requests.filter(~is_inference())["request_key"]
        inference = ~pl.col("request_key").is_in(batch.implode())
        parts.append(counts(sched.lazy().filter((pl.col("event") == "timeout") & inference), "ts", "timeouts"))
        retries = retry_attempts(ctx)
        if retries is not None:
            parts.append(counts(retries.lazy().filter(inference), "ts", "retries"))
    depth_source = None
    if "depth" in ctx.columns and ctx.layer("queue") is not None:
        depth = queue_depth_grid(ctx)
        if depth is not None:
            parts.append(depth.lazy().group_by(pl.col("window_start_ns").alias("w")).agg(_sum_or_null("depth").alias("depth")))
            depth_source = "queue samples"
    if depth_source is None:
        rebuilt = _reconstructed_depth(ctx, lo, hi, w)
        if rebuilt is not None:
            parts.append(rebuilt)
            depth_source = DEPTH_RECONSTRUCTED
    frame = pl.LazyFrame({"w": pl.int_range(lo, hi + w, w, eager=True, dtype=pl.Int64)})
    for part in parts:
        frame = frame.join(part, on="w", how="left")
    frame = frame.collect()
    counted = ["arrivals", "retries", "timeouts", "completions"]
    frame = frame.with_columns(
        [pl.col(c).fill_null(0) if c in frame.columns else pl.lit(0, pl.Int64).alias(c) for c in counted]
    ).sort("w")

    def floats(col: str) -> np.ndarray:
        return frame[col].cast(pl.Float64).fill_null(float("nan")).to_numpy()

    depth_arr = floats("depth") if "depth" in frame.columns else None
    if depth_arr is not None and not np.isfinite(depth_arr).any():
        depth_arr = None
    return FleetWindows(
        w_ns=w,
        start_ns=frame["w"].to_numpy(),
        arrivals=floats("arrivals"),
        retries=floats("retries"),
        timeouts=floats("timeouts"),
        completions=floats("completions"),
        latency_ms=floats("latency_ms"),
        slowdown=floats("slowdown"),
        depth=depth_arr,
        depth_source=depth_source if depth_arr is not None else None,
    )


DEPTH_RECONSTRUCTED = "reconstructed from the scheduler: requests between their final arrival and first dispatch"


def _reconstructed_depth(ctx: FeatureContext, lo: int, hi: int, w: int) -> pl.LazyFrame | None:
    """Requests waiting for their first dispatch at each window start: +1 at the final attempt's
    start, -1 at its dispatch (the prefill queue the scheduler saw, without queue samples)."""
    waited = ctx.inference.lazy().filter(pl.col("final_start_ns").is_not_null() & pl.col("dispatch_ns").is_not_null())
    steps = pl.concat([
        waited.select(pl.col("final_start_ns").alias("t"), pl.lit(1, pl.Int64).alias("d")),
        waited.select(pl.col("dispatch_ns").alias("t"), pl.lit(-1, pl.Int64).alias("d")),
    ]).group_by("t").agg(pl.col("d").sum()).sort("t").with_columns(pl.col("d").cum_sum().alias("depth"))
    if steps.select(pl.len()).collect().item() == 0:
        return None
    grid = pl.LazyFrame({"w": pl.int_range(lo, hi + w, w, eager=True, dtype=pl.Int64)})
    return (
        grid.join_asof(steps.select("t", "depth"), left_on="w", right_on="t", strategy="backward")
        .select("w", pl.col("depth").fill_null(0).cast(pl.Float64))
    )


# ------------------------------------------------------------------------------------------
# Burst amplification
# ------------------------------------------------------------------------------------------

# A window is part of an arrival burst when its fresh arrivals reach both BURST_FACTOR x the
# median window and the median plus BURST_SIGMAS Poisson standard deviations (sqrt(median)), so
# that a quiet trace does not turn its counting noise into bursts.
BURST_FACTOR = 2.0
BURST_SIGMAS = 4.0
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
        "(sqrt(median)); runs one window apart count as one burst.",
        BASE,
    ),
    FeatureSpec(
        "burst_time_frac", "frac",
        "Share of the arrival span's windows that are burst windows: short spikes keep it small, a demand "
        "level that alternates or steps up does not.",
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


def burst_mask(fw: FleetWindows) -> tuple[np.ndarray, float]:
    """Burst windows and the median fresh arrivals per window."""
    a = fw.arrivals
    core = a[1:-1] if fw.n > 12 else a  # the first and last windows are partial
    med = float(np.median(core))
    threshold = max(BURST_FACTOR * med, med + BURST_SIGMAS * math.sqrt(max(med, 1.0)))
    return a >= threshold, med


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
    inf = ctx.inference.filter(pl.col("arrive_ns").is_not_null()).with_columns(
        window_start(pl.col("arrive_ns"), fw.w_ns).alias("w")
    )
    inside = inf.join(in_span, on="w", how="semi").filter(pl.col("dispatch_ns").is_not_null())
    outside = inf.join(in_span, on="w", how="anti").filter(pl.col("outcome") == "completed")
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
    decode = inf.filter(pl.col("decode_dispatch_ns").is_not_null())["decode_device"].drop_nulls().unique()
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
    if fw is None or fw.n < 10:
        return GroupResult(values)
    mask, _ = burst_mask(fw)
    values["burst_time_frac"] = float(mask.mean())
    values["burst_episodes"] = float(len(runs(mask, max_gap=1)))
    if fw.depth is None:
        reason = "no queue depth: neither queue samples nor dispatch times to reconstruct it"
        return GroupResult(values, reasons={n: reason for n, v in values.items() if v is None})
    episodes = burst_episodes(fw)
    if not episodes:
        for name in ("burst_backlog_ratio", "burst_backlog_excess_ratio", "burst_wait_amplification",
                     "burst_timeout_share", "burst_timeout_rate", "burst_retry_load_share"):
            values[name] = 0.0
        return GroupResult(values)
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
    return GroupResult(values, details={"burst_backlog_ratio": detail})


# ------------------------------------------------------------------------------------------
# Retry amplification
# ------------------------------------------------------------------------------------------

# A window belongs to a retry storm when retries over the STORM_SMOOTH_S around it reach
# STORM_SHARE of all attempts there.
STORM_SHARE = 0.1
STORM_SMOOTH_S = 5.0
ATTEMPT_QUANTILE = 0.9  # a window's attempt latency: this quantile of attempt time-to-outcome

RETRY_FEATURES = [
    FeatureSpec(
        "retry_load_share", "frac",
        "Retry attempts / all attempts (fresh first attempts + retries) of inference requests: the share of "
        "the offered load that clients generated by retrying.",
        BASE,
    ),
    FeatureSpec(
        "retry_latency_rank_corr", "corr",
        "Spearman rank correlation over windows between retry attempts per window and the window's attempt "
        f"latency (p{ATTEMPT_QUANTILE * 100:.0f} of the time from an attempt's arrive/retry to its "
        "complete/timeout/drop, by outcome window): positive when retries pile on while attempts are slow. "
        "Null without retries.",
        BASE,
    ),
    FeatureSpec(
        "retry_latency_lift", "ratio",
        "Median attempt latency (definition under retry_latency_rank_corr) over retry-storm windows / the same "
        "over the calm windows: how much slower attempts are while retries pile on. Null without a storm or "
        "without calm windows to compare with.",
        BASE,
    ),
    FeatureSpec(
        "retry_storm_persistence", "frac",
        f"From the first retry-storm window (retries >= {STORM_SHARE:.0%} of the attempts in the "
        f"{STORM_SMOOTH_S:g} s around it) to the end of the arrival span, the share of windows still in the "
        "storm: near 1 when the storm sustains itself, small for isolated retries. 0 without a storm.",
        BASE,
    ),
    FeatureSpec(
        "retry_storm_fresh_ratio", "ratio",
        "Fresh (first-attempt) arrivals per window during the retry storm / in calm windows: near 1 when the "
        "storm is carried by retries, not by more demand. Null without a storm or without calm windows.",
        BASE,
    ),
    FeatureSpec(
        "retry_timeout_trigger_frac", "frac",
        "Share of retry attempts whose request had timed out before the retry (retries triggered by "
        "timeouts rather than by errors or drops). Null without retries.",
        BASE,
    ),
]


def attempt_latency(ctx: FeatureContext, fw: FleetWindows, q: float = ATTEMPT_QUANTILE) -> np.ndarray | None:
    """Per window: quantile q of attempt durations (arrive/retry -> complete/timeout/drop), by end window.

    Requests with one attempt are read from the request table (their outcome time is `complete_ns`
    or their timeout/drop row); only requests with several attempts need their scheduler rows.
    """
    sched = ctx.layer("scheduler")
    if sched is None:
        return None
    inf = ctx.inference
    outcome_rows = sched.filter(pl.col("event").is_in(["timeout", "drop"]))
    single = inf.filter(pl.col("attempts") <= 1)
    ended = (
        single.select("request_key", "arrive_ns", "complete_ns")
        .join(outcome_rows.group_by("request_key").agg(pl.col("ts").min().alias("_end")), on="request_key", how="left")
        .select(pl.col("arrive_ns").alias("t0"), pl.coalesce("complete_ns", "_end").alias("t1"))
    )
    multi_ids = inf.filter(pl.col("attempts") > 1)["request_key"]
    parts = [ended]
    if multi_ids.len():
        rows = sched.filter(pl.col("request_key").is_in(multi_ids.implode()))
        by_number = "attempt" in rows.columns and rows["attempt"].null_count() == 0
        keys = ["request_key", "attempt"]

        def attempts(events: list[str], name: str) -> pl.DataFrame:
            frame = rows.filter(pl.col("event").is_in(events))
            if by_number:
                frame = frame.select("request_key", "attempt", "ts")
            else:  # without attempt numbers, the k-th start pairs with the k-th outcome of the request
                frame = frame.select("request_key", "ts").with_columns(
                    (pl.col("ts").rank("ordinal").over("request_key") - 1).cast(pl.Int64).alias("attempt")
                )
            return frame.group_by(keys).agg(pl.col("ts").min().alias(name))

        parts.append(
            attempts(["arrive", "retry"], "t0").join(attempts(["complete", "timeout", "drop"], "t1"), on=keys).select("t0", "t1")
        )
    per_w = (
        pl.concat(parts)
        .filter(pl.col("t0").is_not_null() & pl.col("t1").is_not_null() & (pl.col("t1") >= pl.col("t0")))
        .group_by(window_start(pl.col("t1"), fw.w_ns).alias("w"))
        .agg(((pl.col("t1") - pl.col("t0")) / NS_PER_MS).quantile(q).alias("d"))
    )
    grid = pl.DataFrame({"w": fw.start_ns}).join(per_w, on="w", how="left").sort("w")
    return grid["d"].fill_null(float("nan")).to_numpy()


def retry_storm(fw: FleetWindows) -> np.ndarray:
    kernel = np.ones(max(1, int(round(STORM_SMOOTH_S * 1e9 / fw.w_ns))))
    r_s = np.convolve(fw.retries, kernel, mode="same")
    a_s = np.convolve(fw.arrivals + fw.retries, kernel, mode="same")
    return (r_s > 0) & (r_s >= STORM_SHARE * a_s)


def _timeout_triggered(ctx: FeatureContext, retries: pl.DataFrame) -> float | None:
    sched = ctx.layer("scheduler")
    if sched is None or retries.height == 0:
        return None
    timeouts = sched.filter(pl.col("event") == "timeout").select(pl.col("request_key"), pl.col("ts").alias("t_ts"))
    if timeouts.height == 0:
        return 0.0
    # A retry is timeout-triggered when its request has a timeout row at or before it.
    r = retries.select(pl.col("request_key"), "ts").sort("request_key", "ts")
    joined = r.join_asof(
        timeouts.sort("request_key", "t_ts"), left_on="ts", right_on="t_ts", by="request_key",
        strategy="backward", check_sortedness=False,
    )
    return float(joined["t_ts"].is_not_null().mean())


@feature_group("retry_amplification", RETRY_FEATURES)
def retry_features(ctx: FeatureContext) -> GroupResult:
    values: dict[str, float | None] = {s.name: None for s in RETRY_FEATURES}
    fw = fleet_windows(ctx)
    if fw is None or fw.n < 10:
        return GroupResult(values)
    total = fw.arrivals.sum() + fw.retries.sum()
    values["retry_load_share"] = float(fw.retries.sum() / total) if total > 0 else None
    values["retry_storm_persistence"] = 0.0
    if fw.retries.sum() == 0:
        return GroupResult(values)
    latency = attempt_latency(ctx, fw)
    if latency is not None:
        values["retry_latency_rank_corr"] = spearman(fw.retries, latency)
    retries = retry_attempts(ctx)
    if retries is not None:
        retries = retries.join(ctx.inference.select("request_key"), on="request_key", how="semi")
        values["retry_timeout_trigger_frac"] = _timeout_triggered(ctx, retries)
    storm = retry_storm(fw)
    if not storm.any():
        return GroupResult(values)
    first = int(np.argmax(storm))
    values["retry_storm_persistence"] = float(storm[first:].mean())
    calm = ~storm
    if calm.sum() >= 3 and fw.arrivals[calm].mean() > 0:
        values["retry_storm_fresh_ratio"] = float(fw.arrivals[storm].mean() / fw.arrivals[calm].mean())
        if latency is not None:
            inside, outside = latency[storm], latency[calm]
            inside, outside = inside[np.isfinite(inside)], outside[np.isfinite(outside)]
            if inside.size and outside.size and np.median(outside) > 0:
                values["retry_latency_lift"] = float(np.median(inside) / np.median(outside))
    w_s = fw.w_ns / 1e9
    details = {
        "retry_storm_persistence": {
            "storm_start": iso(int(fw.start_ns[first])),
            "storm_s": round(float(storm.sum()) * w_s, 3),
            "retries_per_s_in_storm": round(float(fw.retries[storm].mean()) / w_s, 2),
            "fresh_arrivals_per_s_in_storm": round(float(fw.arrivals[storm].mean()) / w_s, 2),
        }
    }
    return GroupResult(values, details=details)


# ------------------------------------------------------------------------------------------
# Idle / overload oscillation
# ------------------------------------------------------------------------------------------

IDLE_BUSY = 0.3  # a pool is idle in a window when its devices are busy less than this, queue empty,
OVERLOAD_BUSY = 0.85  # and overloaded when they are busy at least this with requests waiting.
MIN_PHASE_S = 5.0  # seconds a state must hold without interruption to count as a phase
OSC_REQUIRES = BASE  # pool queues and exec spans when present; else fleet arrivals and waits
IDLE_DEMAND = 0.3  # fleet fallback: a window is near-idle at <= this share of the p90 window's arrivals
MIN_WAIT_MS = 1.0  # fleet fallback: shorter queue waits count as none (timestamp resolution)
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
        f"them waited, overloaded when >= {OVERLOAD_WAITED:.0%} of its arrivals had to queue (the detail "
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


def pool_devices(ctx: FeatureContext) -> pl.DataFrame:
    """(device, pool), Categorical: where the scheduler dispatched to each device, completed by
    device_info rows; a device seen in several pools counts in the smallest-named one."""
    req = ctx.requests
    # Lazy: the streaming engine's distinct pairs of the two Categorical columns are ~3x
    # cheaper than the eager `unique` over every request (0.014 -> 0.005 s each at 870k).
    parts = [
        req.lazy().select(pl.col(d).alias("device"), pl.col(p).alias("pool")).unique().drop_nulls().collect()
        for d, p in (("prefill_device", "pool"), ("decode_device", "decode_pool"))
    ]
    gpu = ctx.layer("gpu")
    if gpu is not None and "pool" in gpu.columns:
        parts.append(gpu.filter(pl.col("event") == "device_info").select("device", "pool").unique().drop_nulls())
    both = pl.concat(parts).unique()
    return both.sort(pl.col("pool").cast(pl.String)).group_by("device", maintain_order=True).agg(pl.col("pool").first())


def pool_windows(ctx: FeatureContext) -> pl.DataFrame | None:
    """Per pool and window (over the span its queues are sampled): the busy fraction over all of
    the pool's devices and the depth summed over the pool's queues (null: not sampled)."""
    depth = queue_depth_grid(ctx)
    devs = pool_devices(ctx)
    if depth is None or devs.is_empty():
        return None
    devs = devs.with_columns(pl.col("pool").cast(pl.String))
    depth = (
        depth.filter(pl.col("pool").is_not_null())
        .group_by("pool", "window_start_ns")
        .agg(_sum_or_null("depth").alias("depth"))
    )
    n_dev = devs.group_by("pool").agg(pl.len().alias("n_dev"))
    busy = (
        ctx.series.devices.lazy()
        .select("device", "window_start_ns", "busy_ms")
        .join(devs.lazy(), on="device")
        .group_by("pool", "window_start_ns")
        .agg(pl.col("busy_ms").fill_null(0.0).sum())
        .collect()
    )
    w_ms = ctx.series.window_ns / NS_PER_MS
    return (
        depth.join(n_dev, on="pool")
        .join(busy, on=["pool", "window_start_ns"], how="left")
        .with_columns((pl.col("busy_ms").fill_null(0.0) / (pl.col("n_dev") * w_ms)).clip(0.0, 1.0).alias("busy"))
        .select("pool", "window_start_ns", "busy", "depth")
        .sort("pool", "window_start_ns")
    )


def phases(state: np.ndarray, min_run: int) -> list[int]:
    """Phase sequence (+1 overload, -1 idle): runs of >= min_run consecutive windows in one state,
    in time order, consecutive phases of the same state merged."""
    found = sorted(
        (first, value) for value in (-1, 1) for first, last in runs(state == value) if last - first + 1 >= min_run
    )
    out: list[int] = []
    for _, value in found:
        if not out or out[-1] != value:
            out.append(value)
    return out


@feature_group("idle_overload_oscillation", OSC_FEATURES)
def oscillation_features(ctx: FeatureContext) -> GroupResult:
    names = [s.name for s in OSC_FEATURES]
    frame = pool_windows(ctx) if {"depth", "dur_ms"} <= ctx.columns else None
    w_s = window_ns(ctx) / 1e9
    min_run = max(2, math.ceil(MIN_PHASE_S / w_s - 1e-9))
    per_pool = [] if frame is None else _pool_oscillations(frame, min_run)
    estimate = "pool queues and device busy time"
    if not per_pool:
        fleet = _fleet_oscillation(ctx, min_run)
        if fleet is None:
            return GroupResult({n: None for n in names}, reasons={n: "too few arrival windows to see phases" for n in names})
        per_pool, estimate = [fleet], "fleet arrivals and queue waits (no per-pool queue samples with exec spans)"
    cycles, idle_frac, over_frac, n, pool = max(per_pool, key=lambda e: (e[0], min(e[1], e[2]), e[3], e[4]))
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


def _fleet_oscillation(ctx: FeatureContext, min_run: int) -> tuple[int, float, float, int, str] | None:
    """The fleet as one pool, read from its requests: demand near idle vs arrivals that must queue."""
    fw = fleet_windows(ctx)
    if fw is None or fw.n < 10:
        return None
    waited = (
        ctx.inference.lazy()
        .filter(pl.col("arrive_ns").is_not_null() & (pl.col("queue_wait_ms") > MIN_WAIT_MS))
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
    return cycles, float(idle.mean()), float(over.mean()), fw.n, "(fleet)"


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
