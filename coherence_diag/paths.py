"""The request-path model: one row per request, from its first arrival to its final outcome.

Built from the clean per-layer tables with Polars lazy group-bys (scheduler rows by request),
joins by request key (execution spans, KV transfers; see request_keys.py), joins by device
(device attributes) and as-of joins by time (host steal at dispatch). Column meanings are in docs/paths.md.

End-to-end latency decomposes along the path (all `_ms`):
    latency = retry_delay + queue_wait + (prefill_exec + kv_transfer + decode_queue + decode_exec
              + residual)
where retry_delay is the time lost in earlier attempts and queue_wait the final attempt's wait
from its arrive/retry to its first dispatch.
"""

from __future__ import annotations

import polars as pl

from coherence_diag.request_keys import KEY

NS_PER_MS = 1_000_000
# How old a telemetry sample may be and still describe the moment of a dispatch.
ASOF_TOLERANCE_NS = 60_000 * NS_PER_MS

OUTCOMES = ("completed", "timeout", "dropped", "unfinished")

# Names are Categorical, as in the validated layers (see validate._layer_columns); the id is
# text, with its integer join key (request_keys.py).
REQUEST_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    KEY: pl.Int128(),
    "workload_class": pl.Categorical(),
    "priority": pl.Int64(),
    "env": pl.Categorical(),
    "arrive_ns": pl.Int64(),
    "final_start_ns": pl.Int64(),
    "dispatch_ns": pl.Int64(),
    "decode_dispatch_ns": pl.Int64(),
    "first_token_ns": pl.Int64(),
    "complete_ns": pl.Int64(),
    "attempts": pl.Int64(),
    "preemptions": pl.UInt32(),
    "outcome": pl.String(),
    "pool": pl.Categorical(),
    "decode_pool": pl.Categorical(),
    "prefill_device": pl.Categorical(),
    "decode_device": pl.Categorical(),
    "prefill_accelerator": pl.Categorical(),
    "decode_accelerator": pl.Categorical(),
    "host": pl.Categorical(),
    "virtualized": pl.Boolean(),
    "prompt_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "slo_ms": pl.Float64(),
    "ttft_slo_ms": pl.Float64(),
    "predicted_ms": pl.Float64(),
    "latency_ms": pl.Float64(),
    "ttft_ms": pl.Float64(),
    "queue_wait_ms": pl.Float64(),
    "retry_delay_ms": pl.Float64(),
    "prefill_exec_ms": pl.Float64(),
    "decode_exec_ms": pl.Float64(),
    "exec_ms": pl.Float64(),
    "kv_transfer_ms": pl.Float64(),
    "kv_bytes": pl.Int64(),
    "decode_queue_ms": pl.Float64(),
    "slo_met": pl.Boolean(),
    "ttft_slo_met": pl.Boolean(),
    "steal_frac_at_dispatch": pl.Float64(),
}


# The analysis works on request keys; the id text is attached only to the public table.
PATH_SCHEMA = {c: t for c, t in REQUEST_SCHEMA.items() if c != "request_id"}


def request_paths(layers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per request seen in the scheduler layer (PATH_SCHEMA: REQUEST_SCHEMA without the
    id text, which `with_request_ids` adds)."""
    sched = layers.get("scheduler")
    if sched is None or sched.is_empty():
        return pl.DataFrame(schema=PATH_SCHEMA)
    requests = _scheduler_lifecycle(sched)
    requests = requests.join(_exec_per_request(layers.get("gpu")), on=KEY, how="left")
    requests = requests.join(_kv_per_request(layers.get("network")), on=KEY, how="left")
    requests = _attach_devices(requests, device_table(layers.get("gpu")))
    requests = _attach_samples(requests, layers)
    return requests.with_columns(*_derived()).select([pl.col(c).cast(t) for c, t in PATH_SCHEMA.items()]).collect()


def with_request_ids(requests: pl.DataFrame, layers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The request table with the id text of each key (REQUEST_SCHEMA): one id per key, so any
    scheduler row of a key gives it."""
    sched = layers.get("scheduler")
    if sched is None or sched.is_empty():
        return pl.DataFrame(schema=REQUEST_SCHEMA)
    ids = sched.lazy().select(KEY, pl.col("request_id").cast(pl.String)).unique(KEY, keep="any")
    return requests.lazy().join(ids, on=KEY, how="left").select(list(REQUEST_SCHEMA)).collect()


def _scheduler_lifecycle(sched_frame: pl.DataFrame) -> pl.LazyFrame:
    event = pl.col("event")
    ts = pl.col("ts")
    sched = sched_frame.lazy()
    # Each aggregation costs a pass over every scheduler row (~0.03 s at 4.4M rows): those whose
    # event never occurs in the layer are constants, known from one look at the event values.
    events = set(sched_frame["event"].unique().drop_nulls().to_list())
    if sched_frame["attempt"].null_count():
        # Retry rows name the new attempt; where `attempt` is absent, count the retries so far.
        retries_so_far = (event == "retry").cast(pl.Int64).cum_sum().over(KEY, order_by="ts")
        sched = sched.with_columns(pl.coalesce(pl.col("attempt"), retries_so_far).alias("attempt"))
        has_retries = True
    else:
        has_retries = bool((sched_frame["attempt"] > 0).any())
    # Without any retry every row belongs to the final attempt: skip the per-request window.
    final = pl.col("attempt") == pl.col("attempt").max().over(KEY) if has_retries else pl.lit(True)
    sched = sched.with_columns(final.alias("_final"))
    start = event.is_in(["arrive", "retry"])

    def first_ts(cond: pl.Expr) -> pl.Expr:
        return pl.when(cond).then(ts).min()

    def any_event(name: str) -> pl.Expr:
        return (event == name).any() if name in events else pl.lit(False)

    # Without retries (every `attempt` is 0) the final attempt starts at the arrival and each
    # request has one attempt; these equal the general aggregations for such a layer.
    final_start = first_ts(start & pl.col("_final")) if has_retries else first_ts(start)
    attempts = pl.col("attempt").max() + 1 if has_retries else pl.lit(1, pl.Int64)
    preemptions = (event == "preempt").sum() if "preempt" in events else pl.lit(0, pl.UInt32)

    # Masked columns and plain aggregations in one group-by (much faster than filters inside
    # agg). Request attributes live on arrive/complete rows; min()/max() over the request keep
    # the choice independent of row order. The final attempt's first dispatch is the prefill
    # (or unified) one, its last the decode one.
    dispatch_ts = pl.when((event == "dispatch") & pl.col("_final")).then(ts)
    lifecycle = sched.group_by(KEY).agg(
        first_ts(start).alias("arrive_ns"),
        final_start.alias("final_start_ns"),
        first_ts(event == "first_token").alias("first_token_ns"),
        pl.when(event == "complete").then(ts).max().alias("complete_ns"),
        dispatch_ts.min().alias("dispatch_ns"),
        pl.when(dispatch_ts.count() >= 2).then(dispatch_ts.max()).alias("decode_dispatch_ns"),
        pl.col("pool").min_by(dispatch_ts).alias("_dispatch_pool"),
        pl.col("pool").max_by(dispatch_ts).alias("decode_pool"),
        pl.col("device").min_by(dispatch_ts).alias("prefill_device"),
        pl.col("device").max_by(dispatch_ts).alias("decode_device"),
        exact_ms_sum(pl.when(dispatch_ts.is_not_null()).then(pl.col("predicted_ms"))).alias("_predicted_sum"),
        pl.when(dispatch_ts.is_not_null()).then(pl.col("predicted_ms")).count().alias("_predicted_n"),
        any_event("timeout").alias("_timed_out"),
        any_event("drop").alias("_dropped"),
        attempts.alias("attempts"),
        preemptions.alias("preemptions"),
        pl.col("pool").min().alias("_any_pool"),
        pl.col("workload_class").min(),
        pl.col("priority").min(),
        pl.col("env").min(),
        pl.col("slo_ms").min(),
        pl.col("ttft_slo_ms").min(),
        pl.col("prompt_tokens").max(),
        pl.col("output_tokens").max(),
    )
    return lifecycle.with_columns(
        pl.coalesce("_dispatch_pool", "_any_pool").alias("pool"),
        pl.when(pl.col("_predicted_n") > 0).then(pl.col("_predicted_sum")).alias("predicted_ms"),
    )


def exact_ms_sum(ms: pl.Expr) -> pl.Expr:
    """Sum of millisecond values in integer nanoseconds: a float sum inside a parallel group-by
    depends on the order rows arrive in, an integer sum does not (same trace, same bits)."""
    return (ms * NS_PER_MS).round().cast(pl.Int64).sum() / NS_PER_MS


def _exec_per_request(gpu: pl.DataFrame | None) -> pl.LazyFrame:
    empty = {
        KEY: pl.Int128,
        "prefill_exec_ms": pl.Float64,
        "decode_exec_ms": pl.Float64,
        "exec_ms": pl.Float64,
        "_prefill_end_ns": pl.Int64,
    }
    if gpu is None:
        return pl.LazyFrame(schema=empty)
    dur = pl.col("dur_ms")
    prefill = pl.col("phase") == "prefill"
    end_ns = pl.col("ts") + (dur * NS_PER_MS).cast(pl.Int64)
    return (
        gpu.lazy()
        .filter((pl.col("event") == "exec") & pl.col(KEY).is_not_null())
        .group_by(KEY)
        .agg(  # masked sums, not filters inside agg (0.104 -> 0.077 s at 1.7M spans)
            exact_ms_sum(pl.when(prefill).then(dur)).alias("prefill_exec_ms"),
            exact_ms_sum(pl.when(pl.col("phase") == "decode").then(dur)).alias("decode_exec_ms"),
            exact_ms_sum(dur).alias("exec_ms"),
            pl.when(prefill).then(end_ns).max().alias("_prefill_end_ns"),
        )
    )


def _kv_per_request(network: pl.DataFrame | None) -> pl.LazyFrame:
    empty = {KEY: pl.Int128, "kv_transfer_ms": pl.Float64, "kv_bytes": pl.Int64, "_kv_end_ns": pl.Int64}
    if network is None:
        return pl.LazyFrame(schema=empty)
    dur = pl.col("dur_ms")
    return (
        network.lazy()
        .filter((pl.col("event") == "transfer") & (pl.col("kind") == "kv_transfer") & pl.col(KEY).is_not_null())
        .group_by(KEY)
        .agg(
            exact_ms_sum(dur).alias("kv_transfer_ms"),
            pl.col("bytes").sum().alias("kv_bytes"),
            (pl.col("ts") + (dur * NS_PER_MS).cast(pl.Int64)).max().alias("_kv_end_ns"),
        )
    )


def device_table(gpu: pl.DataFrame | None) -> pl.LazyFrame:
    """One row per device from `device_info` rows (first seen wins): host, pool, accelerator, ..."""
    schema = {
        "device": pl.Categorical,
        "host": pl.Categorical,
        "pool": pl.Categorical,
        "accelerator": pl.Categorical,
        "mig_profile": pl.Categorical,
        "virtualized": pl.Boolean,
        "first_seen_ns": pl.Int64,
    }
    if gpu is None:
        return pl.LazyFrame(schema=schema)
    ts = pl.col("ts")
    return (
        gpu.lazy()
        .filter(pl.col("event") == "device_info")
        .group_by("device")
        .agg(
            *[pl.col(c).drop_nulls().min_by(ts.filter(pl.col(c).is_not_null())).alias(c)
              for c in ("host", "pool", "accelerator", "mig_profile")],
            pl.col("virtualized").drop_nulls().max().alias("virtualized"),
            ts.min().alias("first_seen_ns"),
        )
        .select(list(schema))
    )


def _attach_devices(requests: pl.LazyFrame, devices: pl.LazyFrame) -> pl.LazyFrame:
    prefill = devices.select(
        pl.col("device").alias("prefill_device"),
        pl.col("accelerator").alias("prefill_accelerator"),
        pl.col("host"),
        pl.col("virtualized"),
    )
    decode = devices.select(pl.col("device").alias("decode_device"), pl.col("accelerator").alias("decode_accelerator"))
    return requests.join(prefill, on="prefill_device", how="left").join(decode, on="decode_device", how="left")


def _attach_samples(requests: pl.LazyFrame, layers: dict[str, pl.DataFrame]) -> pl.LazyFrame:
    """As-of join: the latest steal sample of the request's host before its dispatch."""
    return _asof(requests, layers.get("hypervisor"), "host", "steal_frac", "steal_frac_at_dispatch")


def _asof(
    requests: pl.LazyFrame,
    layer: pl.DataFrame | None,
    by: str,
    value: str,
    alias: str,
    *,
    left_by: str | None = None,
) -> pl.LazyFrame:
    left_by = left_by or by
    if layer is None or value not in layer.columns:
        return requests.with_columns(pl.lit(None, pl.Float64).alias(alias))
    samples = (
        layer.lazy()
        .filter((pl.col("event") == "sample") & pl.col(value).is_not_null() & pl.col(by).is_not_null())
        .select(pl.col(by).alias(left_by), pl.col("ts").alias("dispatch_ns"), pl.col(value).alias(alias))
        .sort(left_by, "dispatch_ns")
    )
    # Only requests on entities that have samples can match; usually a small subset.
    sampled = samples.select(pl.col(left_by).unique())
    keyed = requests.filter(pl.col("dispatch_ns").is_not_null()).join(sampled, on=left_by, how="semi")
    matched = (
        keyed.select(KEY, left_by, "dispatch_ns")
        .sort(left_by, "dispatch_ns")
        .join_asof(samples, on="dispatch_ns", by=left_by, strategy="backward", tolerance=ASOF_TOLERANCE_NS)
        .select(KEY, alias)
    )
    return requests.join(matched, on=KEY, how="left")


def _ms_between(later: str, earlier: str) -> pl.Expr:
    return (pl.col(later) - pl.col(earlier)).cast(pl.Float64) / NS_PER_MS


def _derived() -> list[pl.Expr]:
    completed = pl.col("complete_ns").is_not_null()
    ready_ns = pl.max_horizontal("_prefill_end_ns", "_kv_end_ns")
    decode_queue = ((pl.col("decode_dispatch_ns") - ready_ns).cast(pl.Float64) / NS_PER_MS).clip(lower_bound=0.0)
    outcome = (
        pl.when(completed)
        .then(pl.lit("completed"))
        .when(pl.col("_timed_out"))
        .then(pl.lit("timeout"))
        .when(pl.col("_dropped"))
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("unfinished"))
    )
    latency = pl.when(completed).then(_ms_between("complete_ns", "arrive_ns"))
    ttft = _ms_between("first_token_ns", "arrive_ns")
    return [
        outcome.alias("outcome"),
        latency.alias("latency_ms"),
        ttft.alias("ttft_ms"),
        _ms_between("dispatch_ns", "final_start_ns").alias("queue_wait_ms"),
        _ms_between("final_start_ns", "arrive_ns").alias("retry_delay_ms"),
        pl.when(pl.col("decode_dispatch_ns").is_not_null() & ready_ns.is_not_null()).then(decode_queue).alias(
            "decode_queue_ms"
        ),
        pl.when(pl.col("slo_ms").is_not_null())
        .then(completed & (latency <= pl.col("slo_ms")).fill_null(False))
        .alias("slo_met"),
        pl.when(pl.col("ttft_slo_ms").is_not_null())
        .then((ttft <= pl.col("ttft_slo_ms")).fill_null(False))
        .alias("ttft_slo_met"),
    ]
