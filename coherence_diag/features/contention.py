"""Contention features: inference waiting behind co-resident batch work, and slots held by long
low-priority tasks while high-priority requests wait (priority inversion).

Batch co-residency. Batch work is gpu `exec` spans of phase `batch_job` and requests of
`workload_class` batch (from dispatch to completion when they have no span). Each occupies its
pool (the pool of its device in `device_info`, else the pool of its dispatch) while it runs; the
occupied periods of a pool are the union of those intervals. An inference request *waited behind
batch work* when its queue wait [start of final attempt, dispatch) overlaps an occupied period of
its own (prefill / unified) pool.

Slot locking. A request's *slot* is its decode-side execution (disaggregated serving) or its whole
execution (unified serving); its *slot wait* is decode-side queueing (`decode_queue_ms`) or, without
a decode dispatch, its queue wait. Priority 0 is the highest; the highest class present is the
smallest priority value and the lowest class the largest.
"""

from __future__ import annotations

import polars as pl
from scipy import stats

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import DEVICE_TABLE_COLUMNS, NS_PER_MS, device_table, is_inference

MIN_SIDE = 20  # requests per side of a median comparison
RHO_CAP = 100_000  # requests per side of a rank statistic (deterministic subsample above)
MIN_WAIT_MS = 1.0  # slot waits shorter than this count as no wait (timestamp resolution)
BATCH_FEATURES = (
    "batch_coresident_frac", "batch_coresident_wait_ratio", "batch_coresident_wait_p", "batch_excess_wait_share",
    "batch_pool_occupancy_frac",
)


# --------------------------------------------------------------------------------------------
# batch co-residency


@feature_group(
    "batch_coresidency",
    [
        FeatureSpec(
            "batch_coresident_frac", "frac",
            "Share of dispatched inference requests whose queue wait overlapped batch work (batch_job exec spans or "
            "batch-class requests) running in their own pool. 0 when batch work never shares a pool with inference.",
            ("request_id",),
        ),
        FeatureSpec(
            "batch_coresident_wait_ratio", "ratio",
            "Mean queue wait of inference requests that waited while batch work occupied their pool / mean queue "
            "wait of the other inference requests of the same pools (None with fewer than 20 requests on a side).",
            ("request_id",),
        ),
        FeatureSpec(
            "batch_coresident_wait_p", "p",
            "One-sided Mann-Whitney U p-value that queue waits overlapping batch occupancy of the pool are not "
            "longer than the other waits of the same pools (None with fewer than 20 requests on a side; the other "
            "waits are a deterministic subsample of 100k above that).",
            ("request_id",),
        ),
        FeatureSpec(
            "batch_excess_wait_share", "frac",
            "Queue wait that inference requests accrued beyond their pool's normal wait (the median wait of its "
            "requests that did not overlap batch work; pools with fewer than 20 such requests have no baseline and "
            "are left out) while batch work occupied the pool, as a share of all inference queue wait. "
            "0 when batch work never shares a pool with inference.",
            ("request_id",),
        ),
        FeatureSpec(
            "batch_pool_occupancy_frac", "frac",
            "Share of the trace's time during which batch work occupied at least one pool that also serves "
            "inference (summed over such pools, divided by their number).",
            ("request_id",),
        ),
    ],
)
def batch_coresidency(ctx: FeatureContext) -> GroupResult:
    intervals = _batch_intervals(ctx)
    if intervals is None:
        return GroupResult({}, missing={n: ("workload_class",) for n in BATCH_FEATURES})
    reqs = ctx.inference.lazy().filter(  # lazy: only the selected columns are gathered
        pl.col("dispatch_ns").is_not_null() & pl.col("final_start_ns").is_not_null() & pl.col("pool").is_not_null()
    ).select("pool", "final_start_ns", "dispatch_ns", "queue_wait_ms").collect()
    if reqs.is_empty():
        return GroupResult({}, reason="no dispatched inference requests with a pool")
    total_wait = float(reqs["queue_wait_ms"].clip(lower_bound=0.0).sum())
    inference_pools = reqs.select(pl.col("pool").unique())
    intervals = intervals.join(inference_pools, on="pool", how="semi")
    zero = {"batch_coresident_frac": 0.0, "batch_excess_wait_share": 0.0, "batch_pool_occupancy_frac": 0.0,
            "batch_coresident_wait_ratio": None, "batch_coresident_wait_p": None}
    if intervals.is_empty():
        return GroupResult(zero, reason="batch work never occupied a pool that serves inference")

    # The last occupied period starting before the dispatch has the latest end of all such periods
    # (periods are disjoint), so the wait overlaps some period iff it overlaps that one.
    flagged = (
        reqs.sort("dispatch_ns")
        .join_asof(
            intervals.sort("start_ns"), left_on="dispatch_ns", right_on="start_ns", by="pool",
            strategy="backward", allow_exact_matches=False, check_sortedness=False,
        )
        .with_columns((pl.col("end_ns") > pl.col("final_start_ns")).fill_null(False).alias("_during"))
    )
    shared = flagged.join(intervals.select(pl.col("pool").unique()), on="pool", how="semi")
    # A pool's normal wait: the median wait of its requests that did not overlap batch work. Pools
    # without enough such requests have no baseline and are left out of the excess.
    normal = (
        shared.filter(~pl.col("_during"))
        .group_by("pool")
        .agg(pl.col("queue_wait_ms").median().alias("_normal"), pl.len().alias("_n_normal"))
        .filter(pl.col("_n_normal") >= MIN_SIDE)
    )
    during = shared.filter(pl.col("_during")).join(normal, on="pool", how="inner")
    outside = shared.filter(~pl.col("_during")).join(normal, on="pool", how="semi")
    excess = float((during["queue_wait_ms"] - during["_normal"]).clip(lower_bound=0.0).sum())
    n_in = shared.filter(pl.col("_during")).height
    ratio = p_value = None
    if during.height >= MIN_SIDE and outside.height >= MIN_SIDE:
        mean_in, mean_out = during["queue_wait_ms"].mean(), outside["queue_wait_ms"].mean()
        ratio = mean_in / mean_out if mean_out and mean_out > 0 else None
        sample = outside
        if sample.height > RHO_CAP:  # a deterministic subsample keeps the rank test cheap
            sample = sample.filter(pl.col("dispatch_ns").hash(seed=17) % (-(-sample.height // RHO_CAP)) == 0)
        p_value = float(
            stats.mannwhitneyu(during["queue_wait_ms"].to_numpy(), sample["queue_wait_ms"].to_numpy(), alternative="greater").pvalue
        )
    span_ns = _span_ns(ctx)
    pools = intervals["pool"].n_unique()
    occupied = float((intervals["end_ns"] - intervals["start_ns"]).sum())
    values = {
        "batch_coresident_frac": n_in / reqs.height,
        "batch_coresident_wait_ratio": ratio,
        "batch_coresident_wait_p": p_value,
        "batch_excess_wait_share": excess / total_wait if total_wait > 0 else 0.0,
        "batch_pool_occupancy_frac": min(1.0, occupied / (span_ns * pools)) if span_ns else None,
    }
    by_pool = (
        during.group_by("pool").agg(pl.len().alias("n"), pl.col("queue_wait_ms").median().alias("wait"))
        .sort("n", "pool", descending=[True, False])
    )
    details = {}
    if by_pool.height:
        top = by_pool.row(0, named=True)
        details["batch_excess_wait_share"] = {
            "pool": top["pool"],
            "requests_waiting_behind_batch": n_in,
            "median_wait_behind_batch_ms": during["queue_wait_ms"].median(),
            "median_wait_otherwise_ms": outside["queue_wait_ms"].median(),
            "batch_periods": intervals.height,
        }
    few = f"fewer than {MIN_SIDE} requests of pools with a baseline waited during batch occupancy, or outside it"
    return GroupResult(values, details, reasons={
        "batch_coresident_wait_ratio": few if p_value is None else "the requests outside batch occupancy never waited",
        "batch_coresident_wait_p": few,
        "batch_pool_occupancy_frac": "the requests span no time",
    })


def _span_ns(ctx: FeatureContext) -> float | None:
    r = ctx.requests.select(pl.col("arrive_ns").min().alias("a"), pl.col("complete_ns").max().alias("b")).row(0)
    return float(r[1] - r[0]) if r[0] is not None and r[1] is not None and r[1] > r[0] else None


# The exec spans, of which the batch-job ones are kept; their devices' pools come from the device
# table, read apart (its columns for every exec row would be ~0.3 GB at 100M trace rows).
_BATCH_SPAN_COLUMNS = ("ts", "event", "request_key", "device", "dur_ms", "phase")


def _batch_intervals(ctx: FeatureContext) -> pl.DataFrame | None:
    """Disjoint occupied periods (pool, start_ns, end_ns) of batch work; None if batch work cannot
    be recognised in this trace (no workload_class and no phase)."""
    if "workload_class" not in ctx.columns and "phase" not in ctx.columns:
        return None
    parts = []
    jobs = ctx.requests.filter(~is_inference()).select("request_key", "pool", "dispatch_ns", "complete_ns", "exec_ms")
    gpu = ctx.layer("gpu", _BATCH_SPAN_COLUMNS, events=("exec",))
    if gpu is not None and {"phase", "dur_ms", "device"} <= set(gpu.columns):
        spans = gpu.filter(pl.col("phase") == "batch_job").select("request_key", "device", "ts", "dur_ms")
        del gpu
        if spans.height:
            info = ctx.layer("gpu", DEVICE_TABLE_COLUMNS, events=("device_info",))
            devices = device_table(info).select("device", pl.col("pool").alias("_dev_pool")).collect()
            job_pools = ctx.requests.filter(pl.col("request_key").is_in(spans["request_key"].drop_nulls().unique().implode()))
            spans = spans.join(devices, on="device", how="left").join(
                job_pools.select("request_key", pl.col("pool").alias("_job_pool")), on="request_key", how="left"
            )
            parts.append(spans.select(
                pl.coalesce("_dev_pool", "_job_pool").alias("pool"),
                pl.col("ts").alias("start_ns"),
                (pl.col("ts") + (pl.col("dur_ms") * NS_PER_MS).cast(pl.Int64)).alias("end_ns"),
            ))
            jobs = jobs.filter(~pl.col("request_key").is_in(spans["request_key"].drop_nulls().unique().implode()))
    if jobs.height:
        parts.append(jobs.select(
            "pool",
            pl.col("dispatch_ns").alias("start_ns"),
            pl.coalesce(
                "complete_ns", pl.col("dispatch_ns") + (pl.col("exec_ms") * NS_PER_MS).cast(pl.Int64)
            ).alias("end_ns"),
        ))
    if not parts:
        return pl.DataFrame(schema={"pool": pl.Categorical, "start_ns": pl.Int64, "end_ns": pl.Int64})
    raw = pl.concat(parts).drop_nulls().filter(pl.col("end_ns") > pl.col("start_ns"))
    # Union per pool: a new period starts where a start lies beyond every earlier end.
    return (
        raw.sort("pool", "start_ns", "end_ns")
        .with_columns(pl.col("end_ns").cum_max().shift(1).over("pool").alias("_prev_end"))
        .with_columns((pl.col("start_ns") > pl.col("_prev_end")).fill_null(True).cum_sum().over("pool").alias("_period"))
        .group_by("pool", "_period")
        .agg(pl.col("start_ns").min(), pl.col("end_ns").max())
        .select("pool", "start_ns", "end_ns")
        .sort("pool", "start_ns")
    )


# --------------------------------------------------------------------------------------------
# slot locking / priority inversion


@feature_group(
    "slot_locking",
    [
        FeatureSpec(
            "hp_slot_wait_share", "frac",
            "Over completed inference requests of the highest priority class present (smallest priority value): "
            "total slot wait (decode-side queueing, or queue wait on unified serving) / total end-to-end latency.",
            ("priority",),
        ),
        FeatureSpec(
            "lowprio_slot_share", "frac",
            "Share of slot time (decode execution, or whole execution on unified serving) held by inference "
            "requests of the lowest priority class present (largest priority value).",
            ("priority", "dur_ms"),
        ),
        FeatureSpec(
            "lowprio_slot_hold_ratio", "ratio",
            "Mean slot time per request of the lowest priority class / mean slot time per request of the other "
            "classes: how much longer low-priority work holds a slot once it has one.",
            ("priority", "dur_ms"),
        ),
        FeatureSpec(
            "hp_wait_lowprio_occupancy_frac", "frac",
            "For completed highest-priority requests that waited at least 1 ms for a slot: share of the slots "
            "running on their device at the moment they started waiting that were held by lowest-priority work, "
            "weighted by the wait (None when no such request waited).",
            ("priority", "dur_ms"),
        ),
        FeatureSpec(
            "hp_wait_behind_lowprio_share", "frac",
            "Share of the end-to-end latency of completed highest-priority requests spent waiting for a slot "
            "while lowest-priority work held the slots of their device: sum over requests of slot wait x the "
            "lowest-priority share of the running slots when the wait began (waits under 1 ms count as none), "
            "divided by their summed latency. 0 when no high-priority request waited.",
            ("priority", "dur_ms"),
        ),
        FeatureSpec(
            "above_lowprio_wait_behind_share", "frac",
            "As hp_wait_behind_lowprio_share, over the completed requests of every class above the lowest (all "
            "work more important than the holders): the share of their summed latency spent waiting for a slot "
            "while lowest-priority work held the slots of their device (wait x the lowest class's share of the "
            "running slots when the wait began).",
            ("priority", "dur_ms"),
        ),
        FeatureSpec(
            "hp_wait_protection_ratio", "ratio",
            "Mean slot wait of the highest priority class / mean slot wait of the intermediate classes (of all "
            "other classes when there are only two). Well below 1 when priority protects; near or above 1 when "
            "it does not (priority inversion).",
            ("priority",),
        ),
        FeatureSpec(
            "priority_wait_rho", "corr",
            "Spearman rank correlation between priority value and slot wait over inference requests that got a "
            "slot (a deterministic subsample of 100k above that): positive when lower priority waits longer, "
            "<= 0 when priority is inverted or ignored.",
            ("priority",),
        ),
    ],
)
def slot_locking(ctx: FeatureContext) -> GroupResult:
    reqs = ctx.inference.lazy().filter(pl.col("priority").is_not_null())  # lazy: only the columns selected are gathered
    disagg = pl.col("decode_dispatch_ns").is_not_null()
    slot = reqs.select(
        "priority",
        "outcome",
        "latency_ms",
        pl.col("decode_device").alias("_device"),
        pl.when(disagg).then(pl.col("decode_dispatch_ns")).otherwise(pl.col("dispatch_ns")).alias("_start_ns"),
        pl.when(disagg).then(pl.col("decode_exec_ms")).otherwise(pl.col("exec_ms")).alias("_slot_ms"),
        pl.when(disagg).then(pl.col("decode_queue_ms")).otherwise(pl.col("queue_wait_ms")).alias("_wait_ms"),
    ).filter(pl.col("_start_ns").is_not_null()).collect()
    if slot.is_empty() or slot["priority"].n_unique() < 2:
        return GroupResult({}, reason="fewer than two priority classes among dispatched inference requests")
    hi, lo = slot["priority"].min(), slot["priority"].max()
    values: dict[str, float | None] = {}
    reasons = {
        "hp_slot_wait_share": "no completed request of the highest priority class",
        "hp_wait_behind_lowprio_share": "no completed request of the highest priority class",
        "above_lowprio_wait_behind_share": "no completed request above the lowest priority class",
        "hp_wait_protection_ratio": "no slot waits to compare: the highest priority class has none, or the "
        "intermediate classes never waited",
        "priority_wait_rho": f"fewer than {MIN_SIDE} inference requests with a slot wait",
    }

    hp_done = slot.filter((pl.col("priority") == hi) & (pl.col("outcome") == "completed"))
    lat = hp_done["latency_ms"].sum()
    values["hp_slot_wait_share"] = float(hp_done["_wait_ms"].fill_null(0.0).sum() / lat) if lat else None

    held = slot.filter(pl.col("_slot_ms").is_not_null())
    is_low = pl.col("priority") == lo
    if held.height and "dur_ms" in ctx.columns:
        row = held.select(
            pl.col("_slot_ms").filter(is_low).sum().alias("low_sum"),
            pl.col("_slot_ms").sum().alias("all_sum"),
            pl.col("_slot_ms").filter(is_low).mean().alias("low_mean"),
            pl.col("_slot_ms").filter(~is_low).mean().alias("other_mean"),
        ).row(0, named=True)
        values["lowprio_slot_share"] = row["low_sum"] / row["all_sum"] if row["all_sum"] else None
        values["lowprio_slot_hold_ratio"] = (
            row["low_mean"] / row["other_mean"] if row["low_mean"] is not None and row["other_mean"] else None
        )
        behind, waited = _waits_behind_lowprio(held, pl.col("priority") == hi, lo)
        values["hp_wait_lowprio_occupancy_frac"] = behind / waited if waited > 0 else None
        values["hp_wait_behind_lowprio_share"] = behind / lat if lat else None
        above_lat = slot.filter((pl.col("priority") != lo) & (pl.col("outcome") == "completed"))["latency_ms"].sum()
        above_behind, _ = _waits_behind_lowprio(held, pl.col("priority") != lo, lo)
        values["above_lowprio_wait_behind_share"] = above_behind / above_lat if above_lat else None
        reasons["hp_wait_lowprio_occupancy_frac"] = (
            f"no completed highest-priority request waited {MIN_WAIT_MS:g} ms or more for a slot"
        )
        reasons["lowprio_slot_share"] = "the slot times of the inference requests sum to 0"
        reasons["lowprio_slot_hold_ratio"] = "no slot time of the lowest priority class, or none of the others"
    else:
        values.update(
            lowprio_slot_share=None, lowprio_slot_hold_ratio=None, hp_wait_lowprio_occupancy_frac=None,
            hp_wait_behind_lowprio_share=None, above_lowprio_wait_behind_share=None,
        )
        no_slots = "no slot time (execution) recorded for prioritized requests"
        for name in ("lowprio_slot_share", "lowprio_slot_hold_ratio", "hp_wait_lowprio_occupancy_frac",
                     "hp_wait_behind_lowprio_share", "above_lowprio_wait_behind_share"):
            reasons[name] = no_slots

    waits = slot.filter(pl.col("_wait_ms").is_not_null())
    classes = sorted(waits["priority"].unique().to_list())
    middle = [p for p in classes if p not in (hi, lo)] or [p for p in classes if p != hi]
    hp_mean = waits.filter(pl.col("priority") == hi)["_wait_ms"].mean()
    mid_mean = waits.filter(pl.col("priority").is_in(middle))["_wait_ms"].mean()
    values["hp_wait_protection_ratio"] = (
        hp_mean / mid_mean if hp_mean is not None and mid_mean is not None and mid_mean > 0 else None
    )
    if waits.height > RHO_CAP:  # a deterministic subsample keeps the rank correlation cheap
        waits = waits.filter(pl.col("_start_ns").hash(seed=17) % (-(-waits.height // RHO_CAP)) == 0)
    values["priority_wait_rho"] = (
        waits.select(pl.corr("priority", "_wait_ms", method="spearman")).item() if waits.height >= MIN_SIDE else None
    )
    details = {
        "hp_slot_wait_share": {
            "highest_priority": hi,
            "lowest_priority": lo,
            "highest_priority_requests": hp_done.height,
            "highest_priority_p90_slot_wait_ms": hp_done["_wait_ms"].quantile(0.9, "linear"),
        }
    }
    return GroupResult(values, details, reasons=reasons)


def _waits_behind_lowprio(held: pl.DataFrame, waiters: pl.Expr, lo: int) -> tuple[float, float]:
    """(sum over completed requests selected by `waiters` that waited >= MIN_WAIT_MS of wait x the
    lowest class's share of the slots running on their device when the wait began, sum of those
    waits). Only the devices where such waits happened are replayed."""
    waiting = held.filter(
        waiters
        & (pl.col("outcome") == "completed")
        & pl.col("_device").is_not_null()
        & (pl.col("_wait_ms") >= MIN_WAIT_MS)
    ).select(
        "_device",
        (pl.col("_start_ns") - (pl.col("_wait_ms") * NS_PER_MS).cast(pl.Int64)).alias("t"),
        pl.col("_wait_ms"),
    )
    if waiting.is_empty():
        return 0.0, 0.0
    spans = held.filter(
        pl.col("_device").is_in(waiting["_device"].unique().implode()) & (pl.col("_slot_ms") > 0)
    ).select(
        "_device",
        "_start_ns",
        (pl.col("_start_ns") + (pl.col("_slot_ms") * NS_PER_MS).cast(pl.Int64)).alias("_end_ns"),
        (pl.col("priority") == lo).cast(pl.Int64).alias("_low"),
    )
    # Replay the slot occupancy of each device: +1 at a span start, -1 at its end. Every span
    # ends, so each device's deltas sum to zero and one cumulative sum over the (device, t)-sorted
    # events gives every device's running count; of events at the same instant the last row holds
    # the state after all of them.
    events = (
        pl.concat([
            spans.select("_device", pl.col("_start_ns").alias("t"), pl.lit(1, pl.Int64).alias("d_all"), pl.col("_low").alias("d_low")),
            spans.select("_device", pl.col("_end_ns").alias("t"), pl.lit(-1, pl.Int64).alias("d_all"), (-pl.col("_low")).alias("d_low")),
        ])
        .sort("_device", "t")
        .with_columns(pl.col("d_all").cum_sum().alias("running"), pl.col("d_low").cum_sum().alias("running_low"))
        .filter((pl.col("t") != pl.col("t").shift(-1)) | (pl.col("_device") != pl.col("_device").shift(-1)) | pl.col("t").shift(-1).is_null())
        .select("_device", "t", "running", "running_low")
    )
    at = waiting.sort("t").join_asof(events, on="t", by="_device", strategy="backward", check_sortedness=False)
    frac = pl.when(pl.col("running") > 0).then(pl.col("running_low") / pl.col("running")).otherwise(0.0)
    row = at.select((frac.fill_null(0.0) * pl.col("_wait_ms")).sum(), pl.col("_wait_ms").sum()).row(0)
    return float(row[0]), float(row[1])


# --------------------------------------------------------------------------------------------
# batch work dispatched through the inference queue


@feature_group(
    "batch_queue",
    [
        FeatureSpec(
            "batch_queued_jobs", "count",
            "Batch-class requests (workload_class batch) that the scheduler dispatched into a pool that also serves "
            "inference: batch work that shares the inference queue. 0 when batch work reaches the devices by "
            "another route (a separate pool, or an external system whose holds show only as exec spans).",
            ("workload_class",),
        ),
    ],
)
def batch_queue(ctx: FeatureContext) -> GroupResult:
    inference_pools = ctx.inference.select(pl.col("pool").drop_nulls().unique())
    jobs = ctx.requests.filter(~is_inference() & pl.col("dispatch_ns").is_not_null()).join(inference_pools, on="pool", how="semi")
    return GroupResult({"batch_queued_jobs": float(jobs.height)})
