"""Device memory held by devices that compute nothing: capacity nominally allocated, effectively idle.

A device whose memory is occupied (a loaded model, a held KV cache) cannot be given to other work,
whatever its utilization: the scheduler counts it as taken. When its duty cycle (`gpu_util`, the
fraction of time any kernel ran) is 0 in the same sample, the capacity is held without producing
anything: hidden capacity (the HCL index measures the same gap from request time; this measures
it from device samples alone, for traces that have no requests). Requests queuing at a device
whose GPU is idle corroborate: their wait is not for compute (model loading or switching, a
stuck worker).

GPU memory and duty-cycle samples of a device are paired by the nearest memory sample at most
MAX_PAIR_S before or after the duty sample (exporters sample the two metrics separately).
"""

from __future__ import annotations

import polars as pl

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group

HELD_BYTES = 1 << 30  # 1 GiB: more than a runtime's own context; a model or cache is resident
IDLE_UTIL = 0.0  # duty cycle exactly 0 in the sample: no kernel ran
MAX_PAIR_S = 60.0
HOLDER_SHARE = 0.5  # a device idle-holding in at least half its samples is a holder
MIN_SAMPLES = 20

NEEDS = ("device", "gpu_util", "mem_used_bytes")
FEATURES = [
    FeatureSpec(
        "idle_hold_sample_frac", "frac",
        "Share of paired GPU samples whose device holds at least 1 GiB of memory while its duty cycle is 0.", NEEDS,
    ),
    FeatureSpec(
        "idle_hold_device_frac", "frac",
        f"Share of devices that idle-hold memory (>= 1 GiB at 0 duty cycle) in at least {HOLDER_SHARE:.0%} of their samples.", NEEDS,
    ),
    FeatureSpec(
        "idle_hold_memory_frac", "frac",
        "Share of all sampled device memory (bytes summed over paired samples) held at 0 duty cycle.", NEEDS,
    ),
    FeatureSpec(
        "idle_hold_queued_frac", "frac",
        "Share of queue samples with requests waiting (wait_ms > 0) at a device-named queue whose GPU was idle (duty "
        "cycle 0) in the nearest sample: waits that are not for compute. Needs queues named after their device.",
        (*NEEDS, "queue", "wait_ms"),
    ),
]


_SAMPLE_COLUMNS = ("ts", "event", "device", "gpu_util", "mem_used_bytes")
_QUEUE_COLUMNS = ("ts", "queue", "wait_ms")  # rows of every event (a wait is a wait)


@feature_group("idle_memory_holds", FEATURES)
def idle_memory_holds(ctx: FeatureContext) -> GroupResult:
    result = GroupResult({f.name: None for f in FEATURES})
    gpu = ctx.layer("gpu", _SAMPLE_COLUMNS, events=("sample",))
    if gpu is None:
        return result.explain("no GPU samples")
    samples = gpu.lazy().filter(pl.col("event") == "sample").select("ts", pl.col("device").cast(pl.String), "gpu_util", "mem_used_bytes")
    duty = samples.filter(pl.col("gpu_util").is_not_null() & pl.col("device").is_not_null()).select("ts", "device", "gpu_util").sort("ts")
    memory = (
        samples.filter(pl.col("mem_used_bytes").is_not_null() & pl.col("device").is_not_null())
        .select("ts", "device", "mem_used_bytes").sort("ts")
    )
    tolerance = int(MAX_PAIR_S * 1e9)
    paired = (
        duty.join_asof(memory, on="ts", by="device", strategy="nearest", tolerance=tolerance, check_sortedness=False)
        .filter(pl.col("mem_used_bytes").is_not_null())
        .with_columns(((pl.col("gpu_util") <= IDLE_UTIL) & (pl.col("mem_used_bytes") >= HELD_BYTES)).alias("held"))
        .collect()
    )
    if paired.height < MIN_SAMPLES:
        return result.explain(f"fewer than {MIN_SAMPLES} GPU samples with both a duty cycle and memory in use within {MAX_PAIR_S:g} s")
    result.values["idle_hold_sample_frac"] = float(paired["held"].mean())  # type: ignore[arg-type]
    per_device = paired.group_by("device").agg(pl.col("held").mean().alias("share"))
    result.values["idle_hold_device_frac"] = float((per_device["share"] >= HOLDER_SHARE).mean())  # type: ignore[arg-type]
    total = float(paired["mem_used_bytes"].sum())
    held = float(paired.filter(pl.col("held"))["mem_used_bytes"].sum())
    result.values["idle_hold_memory_frac"] = held / total if total > 0 else None
    details = (
        per_device.filter(pl.col("share") >= HOLDER_SHARE).sort(["share", "device"], descending=[True, False]).head(5)
        .select("device", pl.col("share").round(3).alias("idle_hold_share"))
    )
    if details.height:
        result.details["idle_hold_device_frac"] = {"holders": details.to_dicts()}

    queue = ctx.layer("queue", _QUEUE_COLUMNS)
    if queue is None or "wait_ms" not in ctx.columns:
        result.reasons["idle_hold_queued_frac"] = "no queue wait samples"
        return result
    waits = (
        queue.lazy().filter(pl.col("wait_ms").is_not_null() & (pl.col("wait_ms") > 0))
        .select("ts", pl.col("queue").cast(pl.String).alias("device")).sort("ts")
    )
    joined = waits.join_asof(duty, on="ts", by="device", strategy="nearest", tolerance=tolerance, check_sortedness=False).collect()
    matched = joined.filter(pl.col("gpu_util").is_not_null())
    if matched.height < MIN_SAMPLES:
        result.reasons["idle_hold_queued_frac"] = "fewer than 20 queue wait samples at a queue named after a device with duty-cycle samples"
        return result
    result.values["idle_hold_queued_frac"] = float((matched["gpu_util"] <= IDLE_UTIL).mean())  # type: ignore[arg-type]
    return result
