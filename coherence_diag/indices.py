"""The four coherence indices: CI, DI, WPI, HCL. Definitions and reasoning: docs/indices.md.

Each index is in [0, 1] or None (not computable from this trace; `evaluability` says why and
which columns are missing). DI, WPI and HCL: higher is worse. CI: higher is more coherent.
The breakdown (per layer, per link, per pool, timeline) is part of the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import polars as pl

from coherence_diag.features import FeatureContext, FeatureValues
from coherence_diag.model import SEVERITIES, Evaluability, Finding, IndexBreakdown, Indices, UnexplainedIndex, iso_utc
from coherence_diag.paths import DEVICE_TABLE_COLUMNS, NS_PER_MS, device_table, is_inference
from coherence_diag.timeseries import all_distinct, busy_intervals

# Short definitions, shown by `coherence-diag explain INDEX`; docs/indices.md has the reasoning.
INDEX_DOCS: dict[str, dict[str, str]] = {
    "CI": {
        "title": "Coherence Index",
        "range": "[0, 1]; higher is more coherent",
        "formula": "geometric mean of the measurable layer-health and link-alignment components "
        "(index_breakdown.layers and .links; each in [0, 1], 1 = healthy); null with fewer than two",
        "needs": "scheduler rows; more layers make more components measurable",
    },
    "DI": {
        "title": "Delay Index",
        "range": "[0, 1]; higher is worse",
        "formula": "sum over completed inference requests of (retry_delay + queue_wait + decode_queue + "
        "kv_transfer) / sum of their end-to-end latency",
        "needs": "scheduler rows (arrive, dispatch, complete); KV transfers and a decode dispatch add their waits",
    },
    "WPI": {
        "title": "Wave Propagation Index",
        "range": "[0, 1]; higher is worse",
        "formula": "over initiating wait excursions (robust z > 4 per pool-side wait series; initiating = not "
        "itself following another), the duration-weighted mean of spread x (0.5 + 0.5 x amplified), where spread "
        "is the share of other series with an excursion starting after it began and within 5 s of its end, and "
        "amplified whether one of those is larger or longer",
        "needs": "two stress series: scheduler rows alone give arrivals, queue wait and latency per pool",
    },
    "HCL": {
        "title": "Hidden Capacity Loss",
        "range": "[0, 1]; higher is worse",
        "formula": "nominal_utilization - effective_utilization (docs/metrics.md)",
        "needs": "gpu_util samples or exec spans, exec spans, and slo_ms",
    },
}

# Features the indices read (computed alongside those the rules need).
FEATURES_USED = frozenset(
    {"utilization_gap", "delay_share", "nominal_utilization", "effective_utilization", "slo_attainment",
     "timeout_rate", "drop_rate", "transfer_share", "mempath_kv_p90_frac", "mempath_preempted_frac",
     "env_shift_ks_stat", "env_shift_ks_p"}
)

# WPI parameters (docs/indices.md).
EXCURSION_Z = 4.0  # robust z-score above which a window is an excursion
WAIT_FLOOR_MS = 10.0  # smallest scale of a wait series: ignores sub-10 ms jitter
WAIT_FLOOR_OF_LATENCY = 0.05  # ... and waits under 5% of the median request latency
FOLLOW_S = 5.0  # an excursion elsewhere starting within this long after is a follower
SETTLE_S = 5.0  # ... and carries the wave when it outlives its initiator by more than this
SHARE_FLOOR = 0.05  # smallest scale of a share series (SLO misses, link utilization)
DEPTH_FLOOR = 1.0  # smallest scale of a queue-depth series (requests)
STABILITY_WINDOW_S = 10.0  # window of the latency-stability series


def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def compute(ctx: FeatureContext, values: FeatureValues) -> tuple[Indices, IndexBreakdown, dict[str, Evaluability]]:
    ev: dict[str, Evaluability] = {}
    v = values.values

    def from_feature(index: str, feature: str) -> float | None:
        value = v.get(feature)
        if value is None:
            missing = values.missing.get(feature, ())
            ev[index] = Evaluability(False, missing, "missing columns" if missing else "the trace has no data for it")
            return None
        ev[index] = Evaluability(True)
        return min(1.0, max(0.0, value))

    hcl = from_feature("HCL", "utilization_gap")
    di = from_feature("DI", "delay_share")
    waves = wave_propagation(ctx)
    if waves.wpi is None:
        ev["WPI"] = Evaluability(False, (), waves.reason)
    else:
        ev["WPI"] = Evaluability(True)
    layers, links = _health(ctx, v, waves.wpi)
    parts = [x for x in [*layers.values(), *links.values()] if x is not None]
    ci = None
    if len(parts) >= 2:
        ci = math.exp(sum(math.log(max(p, 1e-3)) for p in parts) / len(parts))
        ev["CI"] = Evaluability(True)
    else:
        ev["CI"] = Evaluability(False, (), "fewer than two layer or link components could be measured")
    breakdown = IndexBreakdown(
        layers=layers,
        links=links,
        pools=_per_pool(ctx),
        timeline=_timeline(ctx, v, waves.extent, layers),
        wave_episodes=waves.episodes,
    )
    return Indices(CI=ci, DI=di, WPI=waves.wpi, HCL=hcl), breakdown, ev


# --- WPI -------------------------------------------------------------------------------------


@dataclass
class Waves:
    wpi: float | None
    reason: str | None
    episodes: int
    extent: pl.DataFrame | None  # w, wave_extent (share of series hot per window); None without WPI


# What the indices read of the layers (a large trace's layers are read from disk, column by column).
_QUEUE_COLUMNS = ("ts", "queue", "depth")  # _stress_series: every row with a depth
_LINK_COLUMNS = ("ts", "link", "link_util")  # _stress_series: every row with a link_util


def _stress_series(ctx: FeatureContext) -> pl.DataFrame:
    """Per (entity, window): a stress measure and its floor, across layers and entities.

    Series, each where the trace has it (docs/indices.md, WPI):
    - `arrivals`: fresh inference arrivals (demand), floor sqrt(median) (Poisson counting noise);
    - `wait:<pool>`: mean queue wait of requests arriving in the window, per pool of arrival;
    - `decode_wait:<pool>`: mean decode-side wait, per decode pool;
    - `service:<pool>`: mean exec time of requests dispatched in the window, per pool (exec spans);
    - `latency:<pool>`: mean end-to-end latency of requests arriving in the window, per pool;
    - `slo_miss:<pool>`: share of the window's completions that missed their SLO (slo_ms);
    - `depth:<queue>`: mean sampled queue depth (queue layer); `link:<link>`: mean link_util.
    Time floors are max(10 ms, 5% of the median latency), so that jitter below a few percent of a
    request's lifetime is never an excursion.
    """
    window_ns = int(round(ctx.window_s * 1e9))
    reqs = ctx.inference.lazy().filter(pl.col("arrive_ns").is_not_null())
    t0 = _origin(ctx)
    p50 = ctx.metrics.latency_ms.p50
    time_floor = max(WAIT_FLOOR_MS, WAIT_FLOOR_OF_LATENCY * p50) if p50 else WAIT_FLOOR_MS

    def win(ts: str) -> pl.Expr:
        return _window_index(pl.col(ts), t0, window_ns)

    def per_pool(prefix: str, pool: str, ts: str, value: pl.Expr, rows: pl.LazyFrame = reqs, floor: float = time_floor) -> pl.LazyFrame:
        # Group on the categorical pool and name the entity afterwards: a string per window,
        # not per request. Requests without a pool form the fleet-wide series.
        return (
            rows.filter(pl.col(ts).is_not_null())
            .group_by(pl.col(pool).alias("_pool"), win(ts))
            .agg(value.alias("x"))
            .filter(pl.col("x").is_not_null())
            .select(
                pl.concat_str(pl.lit(prefix), pl.col("_pool").cast(pl.String).fill_null("(fleet)")).alias("entity"),
                "w", pl.col("x").cast(pl.Float64), pl.lit(floor).alias("floor"),
            )
        )

    parts = [
        per_pool("wait:", "pool", "arrive_ns", pl.col("queue_wait_ms").mean()),
        per_pool("decode_wait:", "decode_pool", "decode_dispatch_ns", pl.col("decode_queue_ms").mean(),
                 rows=reqs.filter(pl.col("decode_pool").is_not_null())),
        per_pool("latency:", "pool", "arrive_ns", pl.col("latency_ms").mean()),
    ]
    arrivals = reqs.group_by(win("arrive_ns")).agg(pl.len().cast(pl.Float64).alias("x"))
    base = arrivals.select(pl.col("x").median()).collect().item() or 0.0
    parts.append(arrivals.select(pl.lit("arrivals").alias("entity"), "w", "x", pl.lit(max(1.0, math.sqrt(base))).alias("floor")))
    if "dur_ms" in ctx.columns:
        parts.append(per_pool("service:", "pool", "dispatch_ns", pl.col("exec_ms").mean()))
    if "slo_ms" in ctx.columns:
        done = reqs.filter(pl.col("slo_met").is_not_null())
        parts.append(per_pool("slo_miss:", "pool", "complete_ns", (~pl.col("slo_met")).mean(), rows=done, floor=SHARE_FLOOR))
    queue = ctx.layer("queue", _QUEUE_COLUMNS)
    if queue is not None and "depth" in queue.columns:
        parts.append(
            queue.lazy().filter(pl.col("depth").is_not_null() & pl.col("queue").is_not_null())
            .group_by(pl.col("queue").alias("_q"), win("ts")).agg(pl.col("depth").mean().alias("x"))
            .select(pl.concat_str(pl.lit("depth:"), pl.col("_q").cast(pl.String)).alias("entity"), "w",
                    pl.col("x").cast(pl.Float64), pl.lit(DEPTH_FLOOR).alias("floor"))
        )
    # Rows with a link_util (samples), each link's in order: no need of the layer's interleaving.
    network = ctx.layer("network", _LINK_COLUMNS, ordered=False)
    if network is not None and {"link", "link_util"} <= set(network.columns):
        parts.append(
            network.lazy().filter(pl.col("link_util").is_not_null() & pl.col("link").is_not_null())
            .group_by(pl.col("link").alias("_l"), win("ts")).agg(pl.col("link_util").mean().alias("x"))
            .select(pl.concat_str(pl.lit("link:"), pl.col("_l").cast(pl.String)).alias("entity"), "w",
                    pl.col("x").cast(pl.Float64), pl.lit(SHARE_FLOOR).alias("floor"))
        )
    series = pl.concat(parts).collect()
    if series.is_empty():
        return series
    # Dense grid per entity over the arrival span: a window with no arrivals had nothing waiting.
    # Windows without a value in a series take 0 for counts and waits, the previous value for
    # levels (latency, service, depth, link) - a gap in completions is not a drop in latency.
    span = series.filter(pl.col("entity") == "arrivals")["w"]
    if span.is_empty():  # a trace of samples alone (no requests): the span of the samples
        span = series["w"]
    lo, hi = span.min(), span.max()
    entities = series.group_by("entity").agg(pl.col("floor").first()).sort("entity")
    grid = entities.join(pl.DataFrame({"w": pl.int_range(lo, hi + 1, eager=True)}), how="cross")
    level = pl.col("entity").str.starts_with("latency:") | pl.col("entity").str.starts_with("service:") | \
        pl.col("entity").str.starts_with("depth:") | pl.col("entity").str.starts_with("link:")
    return (
        grid.join(series.select("entity", "w", "x"), on=["entity", "w"], how="left")
        .sort("entity", "w")
        .with_columns(
            pl.when(level).then(pl.col("x").forward_fill().backward_fill().over("entity")).otherwise(pl.col("x").fill_null(0.0)).alias("x")
        )
        .with_columns(pl.col("x").fill_null(0.0))
    )


# Position of a stress series along the serving path (WPI's same-window ordering).
_STAGES = {"arrivals": 0, "depth:": 1, "wait:": 1, "link:": 2, "decode_wait:": 2, "service:": 2, "latency:": 3, "slo_miss:": 3}


def _stage(entity: str) -> int:
    return next(stage for prefix, stage in _STAGES.items() if entity.startswith(prefix))


def _origin(ctx: FeatureContext) -> int:
    """Index windows count from the first arrival, so indices do not depend on the clock's origin."""
    first = ctx.requests.select(pl.col("arrive_ns").min()).item()
    return int(first) if first is not None else 0


def stress_excursions(ctx: FeatureContext) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """WPI's stress series scored: per (entity, w) the measure `x`, its robust z-score `z` and
    whether the window is an excursion (`hot`, z > EXCURSION_Z); and the excursion episodes
    (entity, start, end, peak, dur; windows counted from the first arrival), earliest first.
    None with fewer than two stress series. Computed once per context (WPI, then the report's
    wave view, read it)."""
    return ctx.shared("indices.stress_excursions", lambda: _stress_excursions(ctx))


def _stress_excursions(ctx: FeatureContext) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    series = _stress_series(ctx)
    if series.is_empty() or series["entity"].n_unique() < 2:
        return None
    scaled = series.with_columns(
        pl.col("x").median().over("entity").alias("base"),
        ((pl.col("x") - pl.col("x").median().over("entity")).abs().median().over("entity") * 1.4826).alias("mad"),
    ).with_columns(
        pl.max_horizontal("mad", pl.col("base") * 0.25, pl.col("floor")).alias("scale"),
    ).with_columns(((pl.col("x") - pl.col("base")) / pl.col("scale")).alias("z"))
    flagged = scaled.with_columns((pl.col("z") > EXCURSION_Z).alias("hot")).with_columns(
        pl.col("hot").rle_id().over("entity").alias("run")
    )
    episodes = (
        flagged.filter(pl.col("hot"))
        .group_by("entity", "run")
        .agg(pl.col("w").min().alias("start"), pl.col("w").max().alias("end"), pl.col("z").max().alias("peak"))
        .with_columns((pl.col("end") - pl.col("start") + 1).alias("dur"))
        .sort("start", "entity")
    )
    return flagged, episodes


def wave_propagation(ctx: FeatureContext) -> Waves:
    scored = stress_excursions(ctx)
    if scored is None:
        return Waves(None, "needs at least two stress series (one layer of timing: e.g. arrivals only)", 0, None)
    flagged, episodes = scored
    entities = flagged["entity"].n_unique()
    extent = flagged.group_by("w").agg((pl.col("hot").sum() / entities).alias("wave_extent"))
    if episodes.is_empty():
        return Waves(0.0, None, 0, extent)
    follow = max(1, math.ceil(FOLLOW_S / ctx.window_s))
    settle = max(1, math.ceil(SETTLE_S / ctx.window_s))
    eps = episodes.select("entity", "start", "end", "peak", "dur").rows()

    def follows(later: tuple, earlier: tuple) -> bool:
        if later[0] == earlier[0] or not earlier[1] <= later[1] <= earlier[2] + follow:
            return False
        # Same window: a follower only downstream along the serving path (arrivals -> queue ->
        # execution -> latency/SLO); two series of one stage starting together share a cause.
        return earlier[1] < later[1] or _stage(earlier[0]) < _stage(later[0])

    # Only initiating excursions are scored (those that do not themselves follow an earlier one
    # elsewhere): a wave is judged by where it starts, so its own aftermath cannot dilute it.
    # A follower carries the wave when it outlives its initiator by more than the settling time:
    # the disturbance moved on and persisted beyond its cause. One absorbed within seconds of its
    # cause is legitimate queueing (report section 9.3), not a wave.
    weighted = total = 0.0
    for ep in eps:  # a loop over excursion episodes (few), not over trace rows
        if any(follows(ep, other) for other in eps):
            continue
        carried = [o for o in eps if follows(o, ep) and o[2] > ep[2] + settle]
        spread = len({f[0] for f in carried}) / (entities - 1)
        amplified = any(f[3] >= ep[3] or f[4] >= ep[4] for f in carried)
        weighted += ep[4] * spread * (0.5 + 0.5 * amplified)
        total += ep[4]
    return Waves(weighted / total if total else 0.0, None, len(eps), extent)


# --- CI components ----------------------------------------------------------------------------


# Columns of completed requests the CI components read: selected before any filter, so that
# filters gather these and not all ~40 request columns.
_DONE_COLUMNS = (
    "latency_ms", "queue_wait_ms", "decode_queue_ms", "kv_transfer_ms", "retry_delay_ms", "predicted_ms", "exec_ms",
    "decode_device", "prefill_device", "decode_dispatch_ns", "complete_ns", "pool",
)


def _done(ctx: FeatureContext) -> pl.DataFrame:
    """Completed inference requests with a positive latency (narrow: _DONE_COLUMNS)."""
    return ctx.completed.select(_DONE_COLUMNS).filter(pl.col("latency_ms") > 0)


def _health(ctx: FeatureContext, v: dict, wpi: float | None) -> tuple[dict[str, float | None], dict[str, float | None]]:
    done = _done(ctx)
    wait_share = None
    if done.height:
        wait_share = done.select(
            ((pl.col("queue_wait_ms").fill_null(0.0) + pl.col("decode_queue_ms").fill_null(0.0)).sum() / pl.col("latency_ms").sum())
        ).item()
    nominal, effective = v.get("nominal_utilization"), v.get("effective_utilization")
    compute = effective / nominal if nominal and effective is not None else None
    transfers = v.get("transfer_share") if done.select(pl.col("kv_transfer_ms").is_not_null().any()).item() else None
    timeouts = (v.get("timeout_rate") or 0.0) + (v.get("drop_rate") or 0.0)
    slo = v.get("slo_attainment")
    serving = min(slo, 1.0 - timeouts) if slo is not None else (1.0 - timeouts if done.height else None)
    layers = {
        "scheduler": None if wait_share is None else 1.0 - _ramp(wait_share, 0.05, 0.5),
        "compute": compute,
        "network": None if transfers is None else 1.0 - _ramp(transfers, 0.05, 0.4),
        "memory": _memory_health(v),
        "serving": None if serving is None else max(0.0, serving),
    }
    links = {
        # Only a prediction the scheduler made: an estimate fitted on the trace is no model to agree with.
        "scheduler_compute": None if "predicted_ms" in ctx.derived else _prediction_agreement(done),
        "compute_network": _handoff_coherence(done),
        "network_serving": _ttft_stability(ctx),
        "end_to_end": _end_to_end(ctx, done, wpi),
        "environment": _environment_consistency(v),
    }
    return layers, links


def _environment_consistency(v: dict) -> float | None:
    """Across an environment change inside the trace: 1 - ramp(KS statistic of workload-matched
    latency, 0.05, 0.3) when the shift is significant (p < 0.001), 1 when it is not; None with
    one environment."""
    ks, p = v.get("env_shift_ks_stat"), v.get("env_shift_ks_p")
    if ks is None or p is None:
        return None
    return 1.0 - _ramp(ks, 0.05, 0.3) if p < 0.001 else 1.0


def _memory_health(v: dict) -> float | None:
    """The memory path: KV-cache residency of decode-serving devices in the busiest tenth of the
    time and the share of requests evicted for lack of KV space (1 = headroom, 0 = bound)."""
    kv, preempted = v.get("mempath_kv_p90_frac"), v.get("mempath_preempted_frac")
    terms = [t for t in (None if kv is None else _ramp(kv, 0.6, 1.0), None if preempted is None else _ramp(preempted, 0.0, 0.1))
             if t is not None]
    return 1.0 - max(terms) if terms else None


def _prediction_agreement(done: pl.DataFrame) -> float | None:
    """How well the scheduler's service-time model matches execution, on the worst paths.

    Per device (decode device, else prefill device) the p90 of |log(realized / predicted)|;
    then the p90 over devices: tails are set by the slowest structurally exposed paths, so a
    few distorted devices must show even when most paths are well predicted.
    """
    # Narrow before filtering: a filter gathers every column it is given.
    pairs = done.select("predicted_ms", "exec_ms", "decode_device", "prefill_device").filter(
        (pl.col("predicted_ms") > 0) & (pl.col("exec_ms") > 0)
    ).with_columns(
        pl.coalesce(pl.col("decode_device"), pl.col("prefill_device")).alias("_dev"),
        (pl.col("exec_ms") / pl.col("predicted_ms")).log().abs().alias("_err"),
    )
    if pairs.height < 20:
        return None
    per_device = pairs.group_by("_dev").agg(pl.col("_err").quantile(0.9), pl.len().alias("n")).filter(pl.col("n") >= 10)
    if per_device.is_empty():
        err = pairs.select(pl.col("_err").quantile(0.9)).item()
    else:
        err = per_device.select(pl.col("_err").quantile(0.9)).item()
    return 1.0 - _ramp(err, 0.15, 1.0)


def _handoff_coherence(done: pl.DataFrame) -> float | None:
    """Prefill -> decode handoff: median (KV transfer + decode-side wait) / execution time."""
    pairs = done.select("decode_dispatch_ns", "exec_ms", "kv_transfer_ms", "decode_queue_ms").filter(
        pl.col("decode_dispatch_ns").is_not_null() & (pl.col("exec_ms") > 0)
    )
    if pairs.height < 20:
        return None
    ratio = pairs.select(
        ((pl.col("kv_transfer_ms").fill_null(0.0) + pl.col("decode_queue_ms").fill_null(0.0)) / pl.col("exec_ms")).median()
    ).item()
    return 1.0 - _ramp(ratio, 0.05, 1.0)


def _ttft_stability(ctx: FeatureContext) -> float | None:
    """First-token stability: the TTFT tail beyond its median, in typical request lifetimes.

    Measured against the median end-to-end latency rather than the median TTFT: a first token
    that usually takes 30 ms and sometimes 1 s is no incoherence when requests live seconds."""
    ttft = ctx.inference.select("ttft_ms").filter(pl.col("ttft_ms") > 0)
    latency_p50 = ctx.metrics.latency_ms.p50
    if ttft.height < 20 or not latency_p50:
        return None
    p50, p99 = ttft.select(pl.col("ttft_ms").quantile([0.5, 0.99])).item()  # both levels from one sort
    return 1.0 - _ramp((p99 - p50) / latency_p50, 0.5, 3.0)


def _end_to_end(ctx: FeatureContext, done: pl.DataFrame, wpi: float | None) -> float | None:
    """Latency stability over time (p90/p10 of 10-s median latency) times containment (1 - WPI)."""
    window_ns = int(STABILITY_WINDOW_S * 1e9)
    t0 = _origin(ctx)
    medians = done.lazy().group_by(_window_index(pl.col("complete_ns"), t0, window_ns)).agg(
        pl.col("latency_ms").median().alias("m"), pl.len().alias("n")
    ).filter(pl.col("n") >= 5).collect()
    if medians.height < 3:
        return None
    p10, p90 = medians.select(pl.col("m").quantile(0.1).alias("a"), pl.col("m").quantile(0.9).alias("b")).row(0)
    stability = 1.0 - _ramp(p90 / p10 if p10 > 0 else 10.0, 1.3, 4.0)
    return stability * (1.0 - wpi if wpi is not None else 1.0)


# --- per pool ----------------------------------------------------------------------------------


def _per_pool(ctx: FeatureContext) -> dict[str, dict[str, float | None]]:
    """DI per pool (of arrival) and HCL per pool where device telemetry allows."""
    done = _done(ctx).filter(pl.col("pool").is_not_null())
    waits = pl.sum_horizontal(
        pl.col("retry_delay_ms").fill_null(0.0), pl.col("queue_wait_ms").fill_null(0.0),
        pl.col("decode_queue_ms").fill_null(0.0), pl.col("kv_transfer_ms").fill_null(0.0),
    )
    di = (
        done.lazy().group_by("pool").agg((waits.sum() / pl.col("latency_ms").sum()).clip(0.0, 1.0).alias("DI"))
        .with_columns(pl.col("pool").cast(pl.String))  # names after grouping: casts a few rows, not every request
        .collect()
    )
    out: dict[str, dict[str, float | None]] = {row["pool"]: {"DI": row["DI"], "HCL": None} for row in di.iter_rows(named=True)}
    for pool, hcl in _hcl_per_pool(ctx).items():
        out.setdefault(pool, {"DI": None, "HCL": None})["HCL"] = hcl
    return dict(sorted(out.items()))


NOMINAL_COLUMNS = ("event", "device", "gpu_util")  # pool_nominal_utilization: the gpu_util samples
_HCL_SPAN_COLUMNS = ("device", "request_key", "dur_ms", "phase")  # and the exec spans (read as such)


def gpu_device_table(read: Callable[..., pl.DataFrame | None]) -> pl.LazyFrame:
    """paths.device_table of the gpu layer, of which `read` (FeatureContext.layer or
    VisualInputs.layer) reads only what it uses: the device_info rows' DEVICE_TABLE_COLUMNS."""
    return device_table(read("gpu", DEVICE_TABLE_COLUMNS, events=("device_info",)))


def _device_pools(devices: pl.LazyFrame) -> pl.LazyFrame:
    """(device, pool) of a device table (paths.device_table): a device's pool as everywhere else,
    its earliest device_info row that names one (so a device listed in two pools lands in the
    same one whatever the row order)."""
    return devices.select("device", "pool").filter(pl.col("pool").is_not_null())


def pool_nominal_utilization(gpu: pl.DataFrame, devices: pl.LazyFrame) -> pl.LazyFrame:
    """(pool, nominal): the nominal utilization per-pool HCL starts from, the mean over the
    pool's devices of their mean `gpu_util` sample (pool Categorical). `gpu`: the gpu layer's
    rows (NOMINAL_COLUMNS, its samples at least); `devices`: its device table (gpu_device_table)."""
    samples = gpu.lazy().filter((pl.col("event") == "sample") & pl.col("gpu_util").is_not_null()).select("device", "gpu_util")
    return (
        samples.group_by("device").agg(pl.col("gpu_util").mean())
        .join(_device_pools(devices), on="device").group_by("pool").agg(pl.col("gpu_util").mean().alias("nominal"))
    )


def _hcl_per_pool(ctx: FeatureContext) -> dict[str, float]:
    if "slo_ms" not in ctx.columns:
        return {}
    # The samples and the exec spans read apart: each only the rows and columns it uses (at
    # 100M trace rows, every gpu row's six columns were 2 GB).
    samples = ctx.layer("gpu", NOMINAL_COLUMNS, events=("sample",))
    if samples is None:
        return {}
    table = gpu_device_table(ctx.layer)
    devices = _device_pools(table)
    nominal = pool_nominal_utilization(samples, table).collect().lazy()  # the samples freed before the spans are read
    del samples
    spans = ctx.layer("gpu", _HCL_SPAN_COLUMNS, events=("exec",))
    if spans is None:
        return {}
    # Total exec time per pool from spans (grouped by device first: cheap); useful time from the
    # request table (prefill time to the request's pool, decode time to its decode pool), so no
    # span-level join. Integer nanoseconds keep the sums exact.
    ns = (pl.col("dur_ms") * NS_PER_MS).round().cast(pl.Int64)
    by_device = (
        spans.lazy()
        .select("device", ns.alias("_ns"), (pl.col("request_key").is_null() & (pl.col("phase") == "batch_job")).alias("_batch"))
        .group_by("device")
        .agg(pl.col("_ns").sum().alias("all_ns"), pl.col("_ns").filter("_batch").sum().alias("batch_ns"))
    )
    totals = by_device.join(devices, on="device").group_by("pool").agg(pl.col("all_ns").sum(), pl.col("batch_ns").sum())
    useful = pl.when(is_inference()).then(pl.col("slo_met").fill_null(False)).otherwise(pl.col("outcome") == "completed")
    good = ctx.requests.lazy().filter(useful)
    useful_ns = pl.concat(
        [
            good.select("pool", (pl.col("prefill_exec_ms").fill_null(0.0) * NS_PER_MS).round().cast(pl.Int64).alias("ns")),
            good.select(pl.col("decode_pool").alias("pool"), (pl.col("decode_exec_ms").fill_null(0.0) * NS_PER_MS).round().cast(pl.Int64).alias("ns")),
        ]
    ).group_by("pool").agg(pl.col("ns").sum().alias("useful_ns"))
    share = totals.join(useful_ns, on="pool", how="left").select(
        "pool",
        ((pl.col("useful_ns").fill_null(0) + pl.col("batch_ns")) / pl.col("all_ns")).clip(0.0, 1.0).alias("share"),
    )
    joined = nominal.join(share, on="pool", how="left").with_columns(pl.col("pool").cast(pl.String)).collect()
    return {
        row["pool"]: max(0.0, row["nominal"] * (1.0 - row["share"]))
        for row in joined.iter_rows(named=True)
        if row["share"] is not None
    }


# --- timeline ----------------------------------------------------------------------------------
#
# Per window (counted from the first arrival, like the WPI series): DI, HCL, the CI of the layer
# components measurable in that window, and the WPI wave extent. Every column is null where the
# window lacks its inputs. Built from a few group-bys over the window index `w`.

LAYER_COMPONENTS = ("scheduler", "compute", "network", "serving")
_FIXED_ONE = float(1 << 40)  # fixed-point scale for exact, order-free sums of fractions
TIMELINE_COLUMNS = ("CI", "DI", "HCL", "wave_extent")


def _ramp_expr(x: pl.Expr, lo: float, hi: float) -> pl.Expr:
    return ((x - lo) / (hi - lo)).clip(0.0, 1.0)


def _timeline(
    ctx: FeatureContext, v: dict, extent: pl.DataFrame | None, layers: dict[str, float | None]
) -> tuple[dict[str, object], ...]:
    window_ns = int(round(ctx.window_s * 1e9))
    t0 = _origin(ctx)
    parts = [
        _completion_windows(ctx, t0, window_ns, network=layers["network"] is not None),
        _serving_windows(ctx, t0, window_ns),
    ]
    if v.get("utilization_gap") is not None:  # the global HCL's inputs exist
        parts.append(_device_windows(ctx, t0, window_ns))
    if extent is not None:
        parts.append(extent)
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.join(part, on="w", how="full", coalesce=True)
    joined = joined.with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in (*LAYER_COMPONENTS, *TIMELINE_COLUMNS) if c not in joined.columns
    )
    # CI per window: the geometric mean of the window's measurable layer components (at least
    # two), floored at 1e-3 as in the global CI. The link components are not used: see
    # docs/indices.md.
    logs = [pl.col(c).clip(lower_bound=1e-3).log() for c in LAYER_COMPONENTS]
    measured = pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int32) for c in LAYER_COMPONENTS)
    ci = pl.when(measured >= 2).then((pl.sum_horizontal(logs) / measured).exp().clip(0.0, 1.0))
    table = joined.with_columns(ci.alias("CI")).sort("w").select("w", *TIMELINE_COLUMNS)
    return tuple(
        {"window_start": iso_utc(t0 + int(row["w"]) * window_ns), **{c: row[c] for c in TIMELINE_COLUMNS}}
        for row in table.iter_rows(named=True)  # one dict per window (the report's timeline), not per row
    )


def _window_index(ts: pl.Expr, t0: int, window_ns: int) -> pl.Expr:
    return ((ts - t0) // window_ns).alias("w")


def _completion_windows(ctx: FeatureContext, t0: int, window_ns: int, *, network: bool) -> pl.DataFrame:
    """DI and the scheduler (and network) layer components over the requests completing per window.

    Sums are of integer nanoseconds (the waits are differences of ns timestamps; KV transfers
    are rounded to the ns): exact, so a window's value does not depend on row order."""
    done = _done(ctx)

    def ns_sum(*cols: str) -> pl.Expr:
        return pl.sum_horizontal((pl.col(c).fill_null(0.0) * NS_PER_MS).round().cast(pl.Int64) for c in cols).sum()

    latency = ns_sum("latency_ms")
    delay = ns_sum("retry_delay_ms", "queue_wait_ms", "decode_queue_ms", "kv_transfer_ms")
    wait_share = ns_sum("queue_wait_ms", "decode_queue_ms") / latency
    aggs = [(delay / latency).clip(0.0, 1.0).alias("DI"), (1.0 - _ramp_expr(wait_share, 0.05, 0.5)).alias("scheduler")]
    if network:
        aggs.append((1.0 - _ramp_expr(ns_sum("kv_transfer_ms") / latency, 0.05, 0.4)).alias("network"))
    return done.lazy().group_by(_window_index(pl.col("complete_ns"), t0, window_ns)).agg(aggs).collect()


def _serving_windows(ctx: FeatureContext, t0: int, window_ns: int) -> pl.DataFrame:
    """The serving layer component over the inference requests finishing per window:
    min(SLO attainment, 1 - timeout rate - drop rate), the first term only where SLOs exist."""
    columns = ["outcome", "complete_ns", "final_start_ns", "arrive_ns", "slo_ms", "slo_met"]
    finished = ctx.inference.select(columns).filter(pl.col("outcome") != "unfinished")
    ended = pl.coalesce("complete_ns", "final_start_ns", "arrive_ns")  # as the pool series (timeseries.py)
    with_slo = pl.col("slo_ms").is_not_null()
    per_window = finished.lazy().group_by(_window_index(ended, t0, window_ns)).agg(
        pl.len().alias("_n"),
        pl.col("outcome").is_in(["timeout", "dropped"]).sum().alias("_failed"),
        with_slo.sum().alias("_slo_n"),
        pl.col("slo_met").filter(with_slo).sum().alias("_slo_met"),
    )
    healthy = 1.0 - pl.col("_failed") / pl.col("_n")
    attainment = pl.col("_slo_met") / pl.col("_slo_n")
    serving = pl.when(pl.col("_slo_n") > 0).then(pl.min_horizontal(attainment, healthy)).otherwise(healthy)
    return per_window.select("w", serving.clip(lower_bound=0.0).alias("serving")).collect()


# _device_windows and _nominal_windows read the exec spans, and the gpu_util samples or the
# device_info devices, each apart (every gpu row's seven columns were 2.4 GB at 100M trace rows).
_SPAN_WINDOW_COLUMNS = ("ts", "event", "device", "request_key", "dur_ms", "phase")
_SAMPLE_WINDOW_COLUMNS = ("ts", "event", "device", "gpu_util")


def _device_windows(ctx: FeatureContext, t0: int, window_ns: int) -> pl.DataFrame:
    """HCL per window and the compute layer component (its useful share), from the global HCL's
    inputs: nominal utilization in the window (mean over devices of their mean `gpu_util`, or
    exec busy time over device time) times the share of the window's exec time that was not
    useful (spans are placed in the window where they start)."""
    spans = ctx.layer("gpu", _SPAN_WINDOW_COLUMNS, events=("exec",))
    empty = pl.DataFrame(schema={"w": pl.Int64, "HCL": pl.Float64, "compute": pl.Float64})
    if spans is None:
        return empty
    # Useful work as in the global value (metrics._effective_utilization), per span.
    useful = pl.when(is_inference()).then(pl.col("slo_met").fill_null(False)).otherwise(pl.col("outcome") == "completed")
    useful_ids = ctx.requests.lazy().filter(useful).select("request_key").collect().to_series()
    span_useful = pl.col("request_key").is_in(useful_ids.implode()) | (
        pl.col("request_key").is_null() & (pl.col("phase") == "batch_job")
    )
    ns = (pl.col("dur_ms") * NS_PER_MS).round().cast(pl.Int64)  # integer sums: exact, order-free
    # Lazy, so that only the columns used are gathered (eager chains on the wide layer frame
    # would materialise every column of the filtered rows).
    share = (
        spans.lazy()
        .filter(pl.col("event") == "exec")
        .select(_window_index(pl.col("ts"), t0, window_ns), ns.alias("_ns"), span_useful.alias("_useful"))
        .group_by("w")
        .agg(pl.col("_ns").sum().alias("_all_ns"), pl.col("_ns").filter("_useful").sum().alias("_useful_ns"))
        .filter(pl.col("_all_ns") > 0)
        .select("w", (pl.col("_useful_ns") / pl.col("_all_ns")).clip(0.0, 1.0).alias("_share"))
        .collect()
    )
    # The exec fallback of the nominal utilization reads the spans; otherwise they are freed
    # before the samples are read.
    fallback = spans if ctx.metrics.nominal_utilization_source != "gpu_util" else None
    del spans
    nominal = _nominal_windows(ctx, fallback, t0, window_ns)
    return nominal.join(share, on="w", how="inner").select(
        "w",
        (pl.col("_nominal") * (1.0 - pl.col("_share"))).clip(0.0, 1.0).alias("HCL"),
        pl.when(pl.col("_nominal") > 0).then(pl.col("_share")).alias("compute"),
    )


def _nominal_windows(ctx: FeatureContext, spans: pl.DataFrame | None, t0: int, window_ns: int) -> pl.DataFrame:
    """Nominal utilization per window, from the same source as the global one (docs/metrics.md).
    `spans`: the gpu exec rows (_SPAN_WINDOW_COLUMNS), read when the source is exec busy time."""
    if ctx.metrics.nominal_utilization_source == "gpu_util":
        gpu = cast(pl.DataFrame, ctx.layer("gpu", _SAMPLE_WINDOW_COLUMNS, events=("sample",)))
        # The mean over devices adds fixed-point integers (2**-40 resolution): exact, so the
        # result does not depend on the order in which the group-by meets the devices.
        fixed = (pl.col("gpu_util").mean() * _FIXED_ONE).round().cast(pl.Int64)
        # One Int64 key per (window, device): window * 2**32 + device code (codes are below
        # 2**32), so the window is key // 2**32; single-integer group-bys are the cheapest.
        key = (pl.col("ts") - t0) // window_ns * (1 << 32) + pl.col("device").to_physical().cast(pl.Int64)
        plan = (
            gpu.lazy()
            .filter((pl.col("event") == "sample") & pl.col("gpu_util").is_not_null())
            .select(key.alias("_k"), "gpu_util")
        )
        samples = plan.collect()
        if all_distinct(samples["_k"]):
            # One sample per device and window (the usual telemetry period): its mean is the
            # value itself, and the per-key group-by would only copy every sample (0.15 -> 0.07 s
            # at 10M rows, this check included).
            per_device = samples.lazy().select("_k", (pl.col("gpu_util") * _FIXED_ONE).round().cast(pl.Int64).alias("_util"))
        else:
            # Several samples per key (windows longer than the sample period): the fused lazy
            # plan is faster than grouping the collected frame; the check cost ≈0.06 s here.
            per_device = plan.group_by("_k").agg(fixed.alias("_util"))
        return (
            per_device.group_by((pl.col("_k") // (1 << 32)).alias("w"))
            .agg((pl.col("_util").sum() / pl.len() / _FIXED_ONE).alias("_nominal"))
            .collect()
        )
    # Exec busy time: the union of each device's spans in the window over all devices' time.
    spans = cast(pl.DataFrame, spans)
    listed = ctx.layer("gpu", ("device",), events=("device_info",))
    listed_devices = [] if listed is None else [listed["device"]]
    devices = pl.concat([spans["device"], *listed_devices]).drop_nulls().n_unique()
    shifted = spans.lazy().with_columns(pl.col("ts") - t0)  # windows counted from t0, as everywhere here
    busy_ns = (pl.col("busy_ms") * NS_PER_MS).round().cast(pl.Int64)  # integer sum: order-free
    busy = busy_intervals(shifted, window_ns).group_by((pl.col("window_start_ns") // window_ns).alias("w")).agg(
        busy_ns.sum().alias("_busy_ns")
    )
    return busy.select("w", (pl.col("_busy_ns") / (devices * window_ns)).clip(0.0, 1.0).alias("_nominal")).collect()


# --- indices no finding explains --------------------------------------------------------------

# The range in which an index says the fleet is in trouble (the bounds of the shipped default
# gate policy, policies/serving-default.yaml): (direction, bound).
BAD_RANGES: dict[str, tuple[str, float]] = {"CI": ("<", 0.65), "DI": (">", 0.2), "WPI": (">", 0.3), "HCL": (">", 0.15)}


def unexplained(
    values: Indices, breakdown: IndexBreakdown, findings: list[Finding], evaluability: dict[str, Evaluability]
) -> tuple[UnexplainedIndex, ...]:
    """Indices in their bad range while no finding of medium severity or more was made."""
    if any(SEVERITIES.index(f.severity) >= SEVERITIES.index("medium") for f in findings):
        return ()
    blind = tuple(sorted(name for name, e in evaluability.items() if not e.evaluated and name not in BAD_RANGES))
    out = []
    for name, (direction, bound) in BAD_RANGES.items():
        value = getattr(values, name)
        if value is None or not (value < bound if direction == "<" else value > bound):
            continue
        weakest: tuple[str, ...] = ()
        if name == "CI":
            parts = [(f"{kind}.{k}", v) for kind, group in (("layers", breakdown.layers), ("links", breakdown.links))
                     for k, v in group.items() if v is not None]
            weakest = tuple(f"{k} {v:.2f}" for k, v in sorted(parts, key=lambda kv: (kv[1], kv[0]))[:3])
        where = f"; weakest components: {', '.join(weakest)}" if weakest else ""
        could = f"; rules this trace cannot evaluate: {', '.join(blind)}" if blind else ""
        out.append(UnexplainedIndex(
            index=name, value=value, bad_range=f"{direction} {bound:g}", weakest_components=weakest,
            not_evaluable_rules=blind,
            message=f"{name} {value:.2f} is in its bad range ({direction} {bound:g}) and no rule explains it{where}{could}",
        ))
    return tuple(out)
