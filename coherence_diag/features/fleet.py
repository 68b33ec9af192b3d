"""Fleet series shared by the serving-dynamics features (burst_amplification.py,
retry_amplification.py, idle_overload_oscillation.py; also energy.py and service.py).

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

Nothing here registers features: this module holds the helpers the feature families share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl
from scipy import stats

from coherence_diag.features.registry import FeatureContext
from coherence_diag.paths import NS_PER_MS, is_inference
from coherence_diag.request_keys import KEY
from coherence_diag.timeseries import window_start

BASE = ("request_id",)

DEPTH_HOLD_S = 5.0  # a queue-depth sample describes its queue until the next one, at most this long
MIN_FLEET_WINDOWS = 10  # windows of fresh arrivals the fleet series needs before dynamics are read
FEW_FLEET_WINDOWS = f"fewer than {MIN_FLEET_WINDOWS} windows of inference arrivals"
NO_DEPTH = "no queue depth: neither queue samples nor dispatch times to reconstruct it"



# A dispatcher that releases work on a timer (a tick) dispatches every waiting request at the same
# instant; a work-conserving dispatcher dispatches each request when a slot frees, so two share a
# millisecond only by chance (Poisson at the trace's dispatch rate).
DISPATCH_INSTANT_NS = 1_000_000
MIN_DISPATCH_INSTANTS = 10
PACED_GROUP_EXCESS = 2.0  # requests dispatched together twice as often as chance: a timer releases the work


@dataclass(frozen=True)
class DispatchPacing:
    group_excess_ratio: float  # mean dispatches per instant / that expected by chance
    tick_ms: float  # median gap between distinct dispatch instants
    median_wait_ms: float | None  # median queue wait of dispatched inference requests

    @property
    def paced(self) -> bool:
        return self.group_excess_ratio >= PACED_GROUP_EXCESS


def dispatch_pacing(ctx: FeatureContext) -> DispatchPacing | None:
    """How the dispatcher releases work (None: fewer than MIN_DISPATCH_INSTANTS dispatch instants)."""
    instants = (
        ctx.inference.lazy()
        .filter(pl.col("dispatch_ns").is_not_null())
        .group_by((pl.col("dispatch_ns") // DISPATCH_INSTANT_NS).alias("instant"))
        .agg(pl.len().alias("n"))
        .sort("instant")
        .collect()
    )
    if instants.height < MIN_DISPATCH_INSTANTS:
        return None
    span_ms = float(instants["instant"].max() - instants["instant"].min() + 1)  # type: ignore[operator]
    lam = float(instants["n"].sum()) / span_ms
    expected = lam / -math.expm1(-lam)
    tick_ms = float(instants["instant"].diff().drop_nulls().median())  # type: ignore[arg-type]
    wait = ctx.inference.lazy().filter(pl.col("dispatch_ns").is_not_null()).select(pl.col("queue_wait_ms").median()).collect().item()
    return DispatchPacing(
        float(instants["n"].mean()) / expected,  # type: ignore[arg-type]
        tick_ms,
        float(wait) if wait is not None else None,  # type: ignore[arg-type]
    )


def pacing_allowance_ms(ctx: FeatureContext, floor_ms: float) -> float:
    """The queue wait that is only the wait for the dispatcher's next pass: one tick under a
    timer-paced dispatcher (a request arriving just after a pass waits a whole period), else
    `floor_ms`. A wait longer than this is a wait for capacity."""
    pacing = dispatch_pacing(ctx)
    return max(floor_ms, pacing.tick_ms) if pacing is not None and pacing.paced else floor_ms


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


_RETRY_COLUMNS = ("ts", "event", KEY, "attempt")
_RETRY_EVENTS = ("retry", "arrive")


def retry_attempts(ctx: FeatureContext) -> pl.DataFrame | None:
    """One row per retry attempt (request_id, ts): `retry` rows and `arrive` rows with attempt > 0."""
    sched = ctx.layer("scheduler", _RETRY_COLUMNS, events=_RETRY_EVENTS)
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




def sum_or_null(col: str) -> pl.Expr:
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
    return ctx.shared("fleet.fleet_windows", lambda: _build_fleet_windows(ctx))


_TIMEOUT_COLUMNS = ("ts", "event", KEY)


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
    sched = ctx.layer("scheduler", _TIMEOUT_COLUMNS, events=("timeout",))
    if sched is not None:
        # Inference requests are all but the (few) batch jobs.
        batch = ctx.requests.filter(~is_inference())["request_key"]
        inference = ~pl.col("request_key").is_in(batch.implode())
        parts.append(counts(sched.lazy().filter((pl.col("event") == "timeout") & inference), "ts", "timeouts"))
        retries = retry_attempts(ctx)
        if retries is not None:
            parts.append(counts(retries.lazy().filter(inference), "ts", "retries"))
    depth_source = None
    if "depth" in ctx.columns and ctx.has_layer("queue"):
        depth = queue_depth_grid(ctx)
        if depth is not None:
            parts.append(depth.lazy().group_by(pl.col("window_start_ns").alias("w")).agg(sum_or_null("depth").alias("depth")))
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
    gpu = ctx.layer("gpu", ("event", "device", "pool"), events=("device_info",))
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
        .agg(sum_or_null("depth").alias("depth"))
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


def inference_devices(ctx: FeatureContext) -> pl.Series:
    """Devices (Categorical) that served inference requests, prefill or decode."""

    def build() -> pl.Series:
        inf = ctx.inference
        both = pl.concat([inf["prefill_device"].drop_nulls().unique(), inf["decode_device"].drop_nulls().unique()])
        return both.unique().rename("device")

    return ctx.shared("fleet.inference_devices", build)
