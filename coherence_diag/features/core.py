"""Core features: the classical metrics and the latency decomposition, as rule inputs."""

from __future__ import annotations

import polars as pl

from coherence_diag.features.fleet import MIN_DISPATCH_INSTANTS, dispatch_pacing
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group

BASE = ("request_id",)


@feature_group(
    "metrics",
    [
        FeatureSpec("nominal_utilization", "frac", "Nominal utilization (docs/metrics.md).", ()),
        FeatureSpec("effective_utilization", "frac", "Effective utilization (docs/metrics.md).", ("slo_ms",)),
        FeatureSpec("utilization_gap", "frac", "Nominal minus effective utilization (the HCL index).", ("slo_ms",)),
        FeatureSpec("slo_attainment", "frac", "Share of finished inference requests that met their SLO.", ("slo_ms",)),
        FeatureSpec("timeout_rate", "frac", "Share of finished inference requests that timed out.", BASE),
        FeatureSpec("drop_rate", "frac", "Share of finished inference requests that were dropped.", BASE),
        FeatureSpec("latency_p50_ms", "ms", "Median end-to-end latency of completed inference requests.", BASE),
        FeatureSpec("latency_p99_ms", "ms", "p99 end-to-end latency of completed inference requests.", BASE),
        FeatureSpec("tail_ratio", "ratio", "p99 / p50 end-to-end latency.", BASE),
        FeatureSpec("queue_wait_p95_ms", "ms", "p95 queue wait of inference requests.", BASE),
        FeatureSpec("completed_requests", "count", "Completed inference requests.", BASE),
    ],
)
def metric_features(ctx: FeatureContext) -> GroupResult:
    m = ctx.metrics
    p50, p99 = m.latency_ms.p50, m.latency_ms.p99
    gap = None
    if m.nominal_utilization is not None and m.effective_utilization is not None:
        gap = max(0.0, m.nominal_utilization - m.effective_utilization)
    missing = {}
    if m.nominal_utilization is None:
        missing = {
            "nominal_utilization": ("gpu_util",),
            "effective_utilization": ("gpu_util", "dur_ms"),
            "utilization_gap": ("gpu_util", "dur_ms"),
        }
    result = GroupResult(
        {
            "nominal_utilization": m.nominal_utilization,
            "effective_utilization": m.effective_utilization,
            "utilization_gap": gap,
            "slo_attainment": m.slo_attainment,
            "timeout_rate": m.timeout_rate,
            "drop_rate": m.drop_rate,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "tail_ratio": (p99 / p50) if p50 and p99 is not None else None,
            "queue_wait_p95_ms": m.queue_wait_ms.p95,
            "completed_requests": float(m.requests.completed),
        },
        missing=missing,
    )
    for why, names in _METRIC_REASONS:
        result.explain(why, names)
    return result


# Why a metric feature is undefined when its columns are present (docs/metrics.md).
_METRIC_REASONS = (
    ("no GPU execution time to attribute to requests", ("effective_utilization", "utilization_gap")),
    ("no finished inference request with an SLO", ("slo_attainment",)),
    ("no finished inference requests", ("timeout_rate", "drop_rate")),
    ("no completed inference requests", ("latency_p50_ms", "latency_p99_ms")),
    ("no completed inference requests, or their median latency is 0", ("tail_ratio",)),
    ("no inference request was dispatched (no queue waits)", ("queue_wait_p95_ms",)),
)


@feature_group(
    "latency_decomposition",
    [
        FeatureSpec(
            "queue_share_median", "frac",
            "Median over completed inference requests of queue wait / end-to-end latency.", BASE,
        ),
        FeatureSpec("queue_share", "frac", "Total queue wait / total end-to-end latency (completed inference).", BASE),
        FeatureSpec(
            "wait_share_median", "frac",
            "Median over completed inference requests of (queue wait + decode-side queueing) / end-to-end latency: "
            "time spent waiting for a dispatch on either side of a disaggregated path.", BASE,
        ),
        FeatureSpec(
            "delay_share", "frac",
            "Measured non-productive waiting (retry delay + queue wait + decode-side queueing + KV transfer) "
            "/ end-to-end latency, over completed inference requests (the DI index).", BASE,
        ),
        FeatureSpec("transfer_share", "frac", "Total KV-transfer time / total end-to-end latency.", ("dur_ms", "kind")),
        FeatureSpec("retry_share", "frac", "Share of inference requests that needed more than one attempt.", BASE),
    ],
)
def latency_decomposition(ctx: FeatureContext) -> GroupResult:
    columns = ("latency_ms", "queue_wait_ms", "decode_queue_ms", "retry_delay_ms", "kv_transfer_ms")
    done = ctx.completed.lazy().filter(pl.col("latency_ms") > 0).select(columns).collect()  # lazy: these columns only
    if done.is_empty():
        return GroupResult({}, reason="no completed inference requests with a latency")
    waits = pl.sum_horizontal(
        pl.col("retry_delay_ms").fill_null(0.0),
        pl.col("queue_wait_ms").fill_null(0.0),
        pl.col("decode_queue_ms").fill_null(0.0),
        pl.col("kv_transfer_ms").fill_null(0.0),
    )
    row = done.select(
        (pl.col("queue_wait_ms") / pl.col("latency_ms")).median().alias("queue_share_median"),
        (pl.col("queue_wait_ms").sum() / pl.col("latency_ms").sum()).alias("queue_share"),
        ((pl.col("queue_wait_ms").fill_null(0.0) + pl.col("decode_queue_ms").fill_null(0.0)) / pl.col("latency_ms"))
        .median()
        .alias("wait_share_median"),
        (waits.sum() / pl.col("latency_ms").sum()).clip(0.0, 1.0).alias("delay_share"),
        (pl.col("kv_transfer_ms").fill_null(0.0).sum() / pl.col("latency_ms").sum()).alias("transfer_share"),
    ).row(0, named=True)
    inference = ctx.inference
    row["retry_share"] = float((inference["attempts"] > 1).mean()) if inference.height else None
    return GroupResult(row).explain("no completed request has a queue wait (no dispatch recorded)", ["queue_share_median"])


@feature_group(
    "dispatch_pacing",
    [
        FeatureSpec(
            "dispatch_group_excess_ratio", "ratio",
            "Mean number of inference requests dispatched at the same millisecond (first dispatch of the final "
            "attempt) / the mean expected by chance for independent dispatches at the trace's dispatch rate "
            "(lambda / (1 - exp(-lambda)), lambda = dispatches per ms over the dispatch span). About 1 for a "
            "work-conserving dispatcher; far above 1 when a timer releases waiting requests in groups.",
            BASE,
        ),
        FeatureSpec(
            "dispatch_tick_ms", "ms",
            "Median gap between consecutive distinct dispatch instants (ms): the dispatcher's period when it "
            "releases work in groups.",
            BASE,
        ),
        FeatureSpec(
            "dispatch_tick_wait_ratio", "ratio",
            "Median queue wait of dispatched inference requests / dispatch_tick_ms. Waiting for the next pass of "
            "a timer costs half a period on average and at most one: at or below 1 the tick explains the wait; "
            "well above 1 requests wait for a backlog, not for the timer.",
            BASE,
        ),
    ],
)
def dispatch_pacing_features(ctx: FeatureContext) -> GroupResult:
    pacing = dispatch_pacing(ctx)
    if pacing is None:
        reason = f"fewer than {MIN_DISPATCH_INSTANTS} distinct dispatch instants"
        return GroupResult({}, reasons={n: reason for n in ("dispatch_group_excess_ratio", "dispatch_tick_ms", "dispatch_tick_wait_ratio")})
    wait_ms = pacing.median_wait_ms
    return GroupResult(
        {
            "dispatch_group_excess_ratio": pacing.group_excess_ratio,
            "dispatch_tick_ms": pacing.tick_ms,
            "dispatch_tick_wait_ratio": wait_ms / pacing.tick_ms if wait_ms is not None and pacing.tick_ms > 0 else None,
        }
    )
