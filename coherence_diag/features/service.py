"""Service-quality features: is an SLO shortfall explained by a visible capacity shortage?

For every completed inference request that missed its SLO, the trace is asked whether its own
path shows a capacity shortage: it waited (retry delay, queue wait, decode-side queueing), or
its KV transfer crossed a saturated link. A device's busy time is no shortage by itself: a
batching device is busy whenever one sequence runs. Fleet headroom and backlog are measured on the windowed series.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from coherence_diag.features.fleet import NO_DEPTH, fleet_windows, inference_devices, window_ns
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import NS_PER_MS
from coherence_diag.timeseries import window_start

WAIT_SHARE = 0.2  # a miss is explained by waiting when waits are >= this share of its latency
SATURATED = 0.95  # busy fraction (device) or utilization (link) that counts as saturated

SLO = ("slo_ms",)
WAIT = pl.sum_horizontal(
    pl.col("retry_delay_ms").fill_null(0.0), pl.col("queue_wait_ms").fill_null(0.0), pl.col("decode_queue_ms").fill_null(0.0)
)

SERVICE_FEATURES = [
    FeatureSpec(
        "slo_miss_wait_share", "frac",
        "Over completed inference requests that missed their SLO: total waiting (retry delay + queue wait + "
        "decode-side queueing) / total end-to-end latency. Null without SLO misses.",
        SLO,
    ),
    FeatureSpec(
        "slo_miss_explained_frac", "frac",
        "Share of completed inference requests that missed their SLO whose own path shows a visible capacity "
        f"shortage: waiting >= {WAIT_SHARE:.0%} of their latency (a device at capacity makes requests queue), or "
        f"a KV transfer over a link at >= {SATURATED:.0%} utilization in that window "
        f"taking >= {WAIT_SHARE:.0%} of their latency. Null without SLO misses.",
        SLO + ("dur_ms",),
    ),
    FeatureSpec(
        "slo_unexplained_miss_rate", "frac",
        "Completed inference requests that missed their SLO with no visible capacity shortage on their path "
        "(definition under slo_miss_explained_frac) / finished inference requests with an SLO (the "
        "denominator of slo_attainment). 0 when every SLO was met.",
        SLO + ("dur_ms",),
    ),
    FeatureSpec(
        "slo_miss_time_concentration", "frac",
        "Share of SLO misses that complete in the 10% of windows holding the most misses: near 0.1-0.3 for "
        "misses spread evenly over time, near 1 when they cluster in a few incidents. Null without misses.",
        SLO,
    ),
    FeatureSpec(
        "fleet_busy_p95", "frac",
        "p95 over windows of the fleet busy fraction: summed busy time (union of exec spans) of all devices "
        "that served inference / (devices x window). Below ~0.85 the fleet kept headroom even at its "
        "busiest moments.",
        ("dur_ms",),
    ),
    FeatureSpec(
        "backlog_p95_per_device", "ratio",
        "p95 over windows of the fleet queue depth (sum over queues of mean sampled depth) / number of devices "
        "that served inference: how many requests were waiting per device at the busiest moments.",
        ("depth",),
    ),
]


def _missed(ctx: FeatureContext) -> pl.DataFrame:
    """Completed inference requests that missed their SLO, with the columns read here (a lazy
    filter gathers only those: an eager one copies every column)."""
    columns = ("request_key", "latency_ms", "complete_ns", "kv_transfer_ms", "retry_delay_ms", "queue_wait_ms", "decode_queue_ms")
    return (
        ctx.completed.lazy()
        .filter(pl.col("slo_met").is_not_null() & ~pl.col("slo_met") & (pl.col("latency_ms") > 0))
        .select(columns)
        .collect()
    )


def _explained(ctx: FeatureContext, miss: pl.DataFrame, w: int) -> pl.Series:
    """A miss shows a shortage when the request waited a material share of its latency (no free
    slot: a device at capacity makes requests queue, whether it runs one sequence or a batch) or
    spent it in a KV transfer over a saturated link. A device's busy time is not used: a device
    that batches is busy whenever one sequence runs, so busy time says nothing of its capacity."""
    frame = miss.select(
        "request_key",
        (WAIT / pl.col("latency_ms") >= WAIT_SHARE).alias("waited"),
        (pl.col("kv_transfer_ms").fill_null(0.0) / pl.col("latency_ms") >= WAIT_SHARE).alias("long_kv"),
    )
    hot = _hot_link_requests(ctx, frame.filter(pl.col("long_kv"))["request_key"], w)
    frame = frame.with_columns(pl.col("request_key").is_in(hot.implode()).alias("hot_link"))
    return frame.select(pl.col("waited") | (pl.col("long_kv") & pl.col("hot_link"))).to_series()


_TRANSFER_COLUMNS = ("ts", "event", "request_key", "link", "kind")


def _hot_link_requests(ctx: FeatureContext, ids: pl.Series, w: int) -> pl.Series:
    """Of `ids`, the requests with a KV transfer on a link at >= SATURATED utilization in that window."""
    empty = pl.Series("request_key", [], dtype=ids.dtype)
    if ids.len() == 0:
        return empty
    net = ctx.layer("network", _TRANSFER_COLUMNS, events=("transfer",))
    links = ctx.series.links
    if net is None or "link" not in net.columns or links.is_empty():
        return empty
    cond = (pl.col("event") == "transfer") & pl.col("link").is_not_null() & pl.col("request_key").is_in(ids.implode())
    if "kind" in net.columns:
        cond = cond & (pl.col("kind").is_null() | (pl.col("kind") == "kv_transfer"))
    transfers = net.filter(cond).select("request_key", "link", window_start(pl.col("ts"), w).alias("window_start_ns"))
    hot = links.filter(pl.col("link_util") >= SATURATED).select("link", "window_start_ns")
    return transfers.join(hot, on=["link", "window_start_ns"], how="semi")["request_key"].unique()


@feature_group("sla_without_shortage", SERVICE_FEATURES)
def service_features(ctx: FeatureContext) -> GroupResult:
    names = [s.name for s in SERVICE_FEATURES]
    values: dict[str, float | None] = {n: None for n in names}
    w = window_ns(ctx)
    miss = _missed(ctx)
    finished = ctx.inference.select(((pl.col("outcome") != "unfinished") & pl.col("slo_ms").is_not_null()).sum()).item()
    if finished:
        values["slo_unexplained_miss_rate"] = 0.0
    if miss.height:
        values["slo_miss_wait_share"] = miss.select(WAIT.sum() / pl.col("latency_ms").sum()).item()
        explained = _explained(ctx, miss, w)
        values["slo_miss_explained_frac"] = float(explained.mean())
        if finished:
            values["slo_unexplained_miss_rate"] = float((~explained).sum() / finished)
    fw = fleet_windows(ctx)
    if fw is not None and miss.height:
        misses = miss.group_by(window_start(pl.col("complete_ns"), w).alias("w")).agg(pl.len().alias("m"))
        per_w = pl.DataFrame({"w": fw.start_ns}).join(misses, on="w", how="left")["m"].fill_null(0).to_numpy()
        top = max(1, per_w.size // 10)
        values["slo_miss_time_concentration"] = float(np.sort(per_w)[::-1][:top].sum() / max(per_w.sum(), 1))
    inf_devs = inference_devices(ctx)
    devices = ctx.series.devices
    if inf_devs.len() and not devices.is_empty() and fw is not None:
        fleet = (
            devices.lazy()
            .filter(pl.col("device").is_in(inf_devs.implode()))
            .group_by("window_start_ns")
            .agg(pl.col("busy_ms").sum())
            .collect()
        )
        per_w = (
            pl.DataFrame({"window_start_ns": fw.start_ns})
            .join(fleet, on="window_start_ns", how="left")["busy_ms"]
            .fill_null(0.0)
            .to_numpy()
        )
        values["fleet_busy_p95"] = float(np.quantile(per_w / (inf_devs.len() * w / NS_PER_MS), 0.95))
        if fw.depth is not None:
            depth = fw.depth[np.isfinite(fw.depth)]
            if depth.size:
                values["backlog_p95_per_device"] = float(np.quantile(depth, 0.95) / inf_devs.len())
    no_miss = "no completed inference request missed its SLO"
    no_busy = "no windowed busy time of the devices that served inference"
    return GroupResult(values, reasons={
        "slo_miss_wait_share": no_miss,
        "slo_miss_explained_frac": no_miss,
        "slo_unexplained_miss_rate": "no finished inference request with an SLO",
        "slo_miss_time_concentration": no_miss,
        "fleet_busy_p95": no_busy,
        "backlog_p95_per_device": NO_DEPTH if fw is not None and fw.depth is None else no_busy,
    })
