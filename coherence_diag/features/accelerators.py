"""Accelerator-runtime features (domain AI.07): how realized execution on each accelerator class
relates to the scheduler's timing model, and whether compute-visible state matches the memory path.

Service ratio. `predicted_ms` on a `dispatch` row is the service time the scheduler expected; the
`exec` spans on the device are what the runtime realized. A device's *class* is the exec phase it
mostly runs crossed with its accelerator model from `device_info` (its pool when the model is
unknown): one kind of hardware doing one kind of work. Nothing depends on what names say. The
trace is cut into `N_BINS` equal time slices; per class and slice, the *service ratio* is the sum
of exec `dur_ms` (by span start) over the sum of dispatch `predicted_ms` (by dispatch time): 1 means
the scheduler's model is right. Summing per slice, rather than pairing every span with its
dispatch, keeps the cost to two group-bys on a 10M-row trace.

Drift (latency-asymmetry drift, seed 002 section 5.1): the slices are grouped into thirds (early,
middle, late). A class drifts when its late/early service ratio grows *relative to the other
classes* (a step common to the whole fleet, e.g. every host moved to a slower environment, moves
every class and cancels out), is still growing in the last third, and most of its late excess over
the model built up during the trace (a class that was off-model from the start has a constant
inflation, the signature of a memory-bound path, not a drift).

Memory path (memory-path incoherence, seed 002 section 5.2): on devices that run decode, in
sample windows when kernels are running (`gpu_util` >= 0.5, which says only that kernels run),
compare the compute signal (`sm_active`) with the memory path (`mem_bw_util`, KV-cache residency
`kv_cache_util`), together with the consequences: decode time inflated over the scheduler's
model and requests preempted for lack of KV space.
"""

from __future__ import annotations

import math

import polars as pl

from coherence_diag.features.fleet import inference_devices
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import DEVICE_TABLE_COLUMNS, NS_PER_MS, device_table

N_BINS = 12  # equal time slices of the trace; thirds are 4 slices each
EVIDENCE_MIN_GROWTH = 1.2  # relative growth above which the drift evidence (tail, order, KV) is measured
MIN_PER_THIRD = 30  # dispatches per class and third below which a class is not compared
BUSY_GPU_UTIL = 0.5  # a sample window in which kernels ran at least half the time
KV_SATURATED = 0.85  # KV-cache residency at which admission becomes KV-bound
MIN_BUSY_SAMPLES = 30


def _service_bins(ctx: FeatureContext) -> pl.DataFrame | None:
    """Realized and predicted service time per (device class, time slice); cached on ctx.

    Columns: phase, cls, bin (0..N_BINS-1), realized_ms, predicted_ms, dispatches, spans, devices
    (list of the class's devices, same on every row of a class). Realized time is the sum of the
    class's exec `dur_ms` by span start; predicted time the sum of its dispatches' `predicted_ms` by
    dispatch time (a span starts right after its dispatch, so both land in the same slice up to
    edge effects). Summing per slice avoids pairing millions of spans with their dispatches.
    """
    return ctx.shared("accelerators.service_bins", lambda: _build_bins(ctx))


# Dispatches (predicted time, and the pool of devices device_info leaves unclassed); exec spans
# and the device table.
_BINS_SCHED_COLUMNS = ("ts", "event", "device", "pool", "predicted_ms")
_BINS_GPU_COLUMNS = ("dur_ms", "phase", *DEVICE_TABLE_COLUMNS)


def _build_bins(ctx: FeatureContext) -> pl.DataFrame | None:
    sched = ctx.layer("scheduler", _BINS_SCHED_COLUMNS, events=("dispatch",))
    # Exec and device_info rows are filtered apart below: their interleaving does not matter.
    gpu = ctx.layer("gpu", _BINS_GPU_COLUMNS, events=("exec", "device_info"), ordered=False)
    if sched is None or gpu is None:
        return None
    if "predicted_ms" not in sched.columns or "device" not in sched.columns or not {"dur_ms", "device"} <= set(gpu.columns):
        return None
    phase = pl.col("phase") if "phase" in gpu.columns else pl.lit(None, pl.Categorical)
    execs = gpu.lazy().filter((pl.col("event") == "exec") & pl.col("device").is_not_null() & (pl.col("dur_ms") >= 0))
    t0, t1 = execs.select(pl.col("ts").min().alias("t0"), pl.col("ts").max().alias("t1")).collect().row(0)
    if t0 is None or t1 <= t0:
        return None
    span = t1 - t0 + 1

    def slice_of(ts: pl.Expr) -> pl.Expr:
        return ((ts - t0) * N_BINS // span).clip(0, N_BINS - 1).cast(pl.Int16).alias("bin")

    # Sums in integer microseconds: exact, so independent of row order.
    realized_q = execs.group_by("device", phase.alias("phase"), slice_of(pl.col("ts"))).agg(
        _micros("dur_ms").sum().alias("realized_us"), pl.len().alias("spans")
    )
    predicted_q = (
        sched.lazy()
        .filter((pl.col("predicted_ms") > 0) & (pl.col("event") == "dispatch") & pl.col("device").is_not_null())
        .group_by("device", slice_of(pl.col("ts")))
        .agg(_micros("predicted_ms").sum().alias("predicted_us"), pl.len().alias("dispatches"))
    )
    realized, predicted, info = pl.collect_all([realized_q, predicted_q, device_table(gpu)])
    # A device's class: the phase it mostly runs (most spans), crossed with its accelerator (else its pool).
    roles = (
        realized.group_by("device", "phase")
        .agg(pl.col("spans").sum())
        .with_columns(pl.col("phase").cast(pl.String).fill_null("all"))
        .group_by("device")
        .agg(pl.col("phase").sort_by(["spans", "phase"], descending=[True, False]).first())
    )
    info = info.select("device", pl.coalesce(pl.col("accelerator").cast(pl.String), pl.col("pool").cast(pl.String)).alias("cls"))
    classes = roles.join(info, on="device", how="left")
    if classes["cls"].null_count() and "pool" in sched.columns:
        unknown = classes.filter(pl.col("cls").is_null()).select("device")
        dpool = (
            sched.lazy()
            .filter((pl.col("event") == "dispatch") & pl.col("pool").is_not_null())
            .join(unknown.lazy(), on="device", how="semi")
            .group_by("device", "pool")
            .agg(pl.len())
            .collect()
            .group_by("device")
            .agg(pl.col("pool").cast(pl.String).min().alias("_dpool"))
        )
        classes = classes.join(dpool, on="device", how="left").with_columns(pl.coalesce("cls", "_dpool").alias("cls"))
    classes = classes.select("device", "phase", "cls").filter(pl.col("cls").is_not_null() & (pl.col("phase") != "batch_job"))
    realized = realized.group_by("device", "bin").agg(pl.col("realized_us").sum(), pl.col("spans").sum())
    per_device = realized.join(predicted, on=["device", "bin"], how="inner").join(classes, on="device", how="inner")
    if per_device.is_empty():
        return None
    bins = (
        per_device.group_by("phase", "cls", "bin")
        .agg(
            (pl.col("realized_us").sum() / 1000.0).alias("realized_ms"),
            (pl.col("predicted_us").sum() / 1000.0).alias("predicted_ms"),
            pl.col("dispatches").sum(),
            pl.col("spans").sum(),
        )
        .join(per_device.group_by("phase", "cls").agg(pl.col("device").unique().alias("devices")), on=["phase", "cls"])
        .sort("phase", "cls", "bin")
    )
    return bins.with_columns(pl.lit(t0).alias("t0"), pl.lit(span).alias("span_ns"))


def _order_inversions_query(ctx: FeatureContext, t0: int, span_ns: int) -> pl.LazyFrame:
    """Per arrival third: share of adjacent completed requests (in predicted-completion order) that
    completed in the opposite order."""
    return (
        ctx.completed.lazy()
        .filter(pl.col("predicted_ms").is_not_null() & pl.col("dispatch_ns").is_not_null())
        .select(
            _thirds(pl.col("arrive_ns"), t0, span_ns),
            (pl.col("dispatch_ns") + (pl.col("predicted_ms") * NS_PER_MS).cast(pl.Int64)).alias("_pred"),
            "complete_ns",
        )
        .sort("_pred", "complete_ns")
        .with_columns((pl.col("complete_ns") > pl.col("complete_ns").shift(-1)).alias("_inv"))
        .group_by("third")
        .agg(pl.len().alias("n"), pl.col("_inv").drop_nulls().mean())
    )


def _micros(column: str) -> pl.Expr:
    return (pl.col(column) * 1000.0).round().cast(pl.Int64)


def _thirds(ts: pl.Expr, t0: int, span_ns: int) -> pl.Expr:
    return ((ts - t0) * 3 // span_ns).clip(0, 2).alias("third")


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- latency-asymmetry drift ---------------------------------------------------------------

DRIFT_NEEDS = ("predicted_ms", "dur_ms", "device")


@feature_group(
    "accelerator_drift",
    [
        FeatureSpec(
            "drift_class_growth_ratio", "ratio",
            "For the accelerator class (device's main exec phase x accelerator model) whose timing drifts most "
            "relative to the others: service ratio (sum of exec dur_ms / sum of dispatch predicted_ms) in the last "
            "third of the trace / that in the first third (1 = the scheduler's model stays as accurate as it started).",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_relative_growth_ratio", "ratio",
            "Late/early growth of the drifting class's service ratio divided by the median late/early growth "
            "of the other classes doing the same phase of work (all other classes when no other class runs that "
            "phase): drift specific to one class of hardware (a fleet-wide step, or a load surge that slows every "
            "class of a phase, cancels out). The drifting class is the one that maximizes this value; needs at "
            f"least two classes with {MIN_PER_THIRD} dispatches in each third.",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_late_growth_ratio", "ratio",
            "Late/middle-third growth of the drifting class's service ratio divided by the median late/middle "
            "growth of the other classes: > 1 when the divergence is still accumulating at the end of the trace "
            "(cumulative drift rather than a warm-up or a one-off step).",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_accumulated_frac", "frac",
            "Share of the drifting class's late-third excess over the scheduler's model (late service ratio - 1) "
            "that built up during the trace (late - early service ratio), clipped to [0, 1]: 1 = the model was "
            "right for that class at the start and the divergence accumulated; near 0 = the class was already "
            "off-model from the start (a constant inflation, not a drift).",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_rank_corr", "corr",
            f"Spearman rank correlation between time and the drifting class's service ratio over the {N_BINS} equal "
            "time slices of the trace (1 = realized/predicted rises monotonically).",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_divergence_ratio", "ratio",
            "Late-third service ratio of the drifting class / median of the other classes' late-third service "
            "ratios: how far the scheduler's timing model for that class has diverged from the rest of the fleet.",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_order_inversion_growth_frac", "frac",
            "Completion-order inversions against the scheduler's model: completed inference requests ordered by "
            "predicted completion (dispatch + summed predicted_ms), share of adjacent pairs that completed in the "
            "opposite order; requests arriving in the last third minus those in the first third. Measured only when "
            f"a class drifts (relative growth >= {EVIDENCE_MIN_GROWTH}), else None.",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_p99_growth_ratio", "ratio",
            "p99 end-to-end latency of completed inference requests served (prefill or decode) by a device of the "
            "drifting class, requests arriving in the last third / those in the first third (tail widening). "
            f"Measured only when a class drifts (relative growth >= {EVIDENCE_MIN_GROWTH}), else None.",
            DRIFT_NEEDS,
        ),
        FeatureSpec(
            "drift_class_kv_dispersion_growth_ratio", "ratio",
            "Path-dependent KV-transfer variance: for KV transfers into (decode class) or out of (prefill class) the "
            "drifting class's devices, the dispersion of transfer time per byte (p90 / median) in the last third / "
            f"that in the first third. Measured only when a class drifts (relative growth >= {EVIDENCE_MIN_GROWTH}), "
            "else None.",
            DRIFT_NEEDS + ("bytes", "dst_device", "src_device"),
        ),
    ],
)
def accelerator_drift(ctx: FeatureContext) -> GroupResult:
    bins = _service_bins(ctx)
    if bins is None:
        return GroupResult({}, reason="no exec spans matched (by device and time) to dispatches with predicted_ms")
    t0, span_ns = int(bins["t0"][0]), int(bins["span_ns"][0])
    third = (pl.col("bin") * 3 // N_BINS).alias("third")
    per_third = (
        bins.group_by("phase", "cls", third)
        .agg(pl.col("realized_ms").sum() / pl.col("predicted_ms").sum(), pl.col("dispatches").sum())
        .rename({"realized_ms": "r"})
    )
    rho = (
        bins.filter(pl.col("predicted_ms") > 0)
        .group_by("phase", "cls")
        .agg(pl.corr("bin", pl.col("realized_ms") / pl.col("predicted_ms"), method="spearman").alias("rho"))
    )
    rows = []
    for (phase, cls), g in per_third.group_by(["phase", "cls"]):
        by = {r["third"]: r for r in g.iter_rows(named=True)}
        if len(by) < 3 or any(by[k]["dispatches"] < MIN_PER_THIRD or not by[k]["r"] > 0 for k in range(3)):
            continue
        rows.append({"phase": phase, "cls": cls, "m0": by[0]["r"], "m1": by[1]["r"], "m2": by[2]["r"],
                     "n": sum(by[k]["dispatches"] for k in range(3))})
    if len(rows) < 2:
        why = f"fewer than two device classes with {MIN_PER_THIRD} dispatches in each third of the trace"
        return GroupResult({}, reason=why)
    rho_of = {(r["phase"], r["cls"]): r["rho"] for r in rho.iter_rows(named=True)}
    for r in rows:
        r["growth"] = r["m2"] / r["m0"]
        r["late_growth"] = r["m2"] / r["m1"]
    for r in rows:
        # Peers do the same phase of work: decode slows with load in ways prefill does not.
        others = [o for o in rows if o is not r and o["phase"] == r["phase"]] or [o for o in rows if o is not r]
        r["relative"] = r["growth"] / _median([o["growth"] for o in others])
        r["late_relative"] = r["late_growth"] / _median([o["late_growth"] for o in others])
        r["divergence"] = r["m2"] / _median([o["m2"] for o in others])
    top = max(rows, key=lambda r: (r["relative"], r["phase"], r["cls"]))
    rho_top = rho_of.get((top["phase"], top["cls"]))
    values: dict[str, float | None] = {
        "drift_class_growth_ratio": top["growth"],
        "drift_class_relative_growth_ratio": top["relative"],
        "drift_class_late_growth_ratio": top["late_relative"],
        "drift_class_accumulated_frac": (
            min(1.0, max(0.0, (top["m2"] - top["m0"]) / (top["m2"] - 1.0))) if top["m2"] > 1.0 else 0.0
        ),
        "drift_class_rank_corr": rho_top if _finite(rho_top) else 0.0,
        "drift_class_divergence_ratio": top["divergence"],
    }
    detail = {
        "drift_class_phase": top["phase"],
        "drift_class": top["cls"],
        "drift_class_ratio_by_third": [round(top[f"m{k}"], 4) for k in range(3)],
        "drift_class_dispatches": int(top["n"]),
        "drift_classes_compared": len(rows),
    }
    devices = bins.filter((pl.col("phase") == top["phase"]) & (pl.col("cls") == top["cls"]))["devices"][0]
    if top["relative"] < EVIDENCE_MIN_GROWTH:
        return GroupResult(values, details={"drift_class_relative_growth_ratio": detail},
                           reason=f"measured only when a class drifts (relative growth >= {EVIDENCE_MIN_GROWTH:g})")
    inv = {r["third"]: r for r in _order_inversions_query(ctx, t0, span_ns).collect().iter_rows(named=True)}
    early, late = inv.get(0), inv.get(2)
    if early and late and min(early["n"], late["n"]) >= MIN_PER_THIRD and _finite(early["_inv"]) and _finite(late["_inv"]):
        values["drift_order_inversion_growth_frac"] = late["_inv"] - early["_inv"]
        detail["order_inversion_early_frac"] = round(early["_inv"], 4)
        detail["order_inversion_late_frac"] = round(late["_inv"], 4)
    values["drift_class_p99_growth_ratio"] = _tail_growth(ctx, devices, t0, span_ns)
    values["drift_class_kv_dispersion_growth_ratio"] = _kv_dispersion_growth(ctx, devices, top["phase"], t0, span_ns)
    result = GroupResult(values, details={"drift_class_relative_growth_ratio": detail})
    thirds = f"in the first or the last third of the trace (at least {MIN_PER_THIRD} each)"
    result.explain(f"too few completed requests with a prediction {thirds}", ["drift_order_inversion_growth_frac"])
    result.explain(f"too few completed requests served by the drifting class {thirds}", ["drift_class_p99_growth_ratio"])
    result.explain(
        f"too few KV transfers (with bytes) of the drifting class {thirds}", ["drift_class_kv_dispersion_growth_ratio"]
    )
    return result


def _tail_growth(ctx: FeatureContext, devices: pl.Series, t0: int, span_ns: int) -> float | None:
    done = ctx.completed
    if done.is_empty():
        return None
    ids = pl.Series(devices).implode()
    on_class = pl.col("prefill_device").is_in(ids) | pl.col("decode_device").is_in(ids)
    q = (
        done.lazy()
        .filter(on_class & pl.col("latency_ms").is_not_null())
        .group_by(_thirds(pl.col("arrive_ns"), t0, span_ns))
        .agg(pl.len().alias("n"), pl.col("latency_ms").quantile(0.99).alias("p99"))
        .collect()
    )
    by = {r["third"]: r for r in q.iter_rows(named=True)}
    early, late = by.get(0), by.get(2)
    if not early or not late or early["n"] < MIN_PER_THIRD or late["n"] < MIN_PER_THIRD or not early["p99"]:
        return None
    return late["p99"] / early["p99"]


_KV_COLUMNS = ("ts", "event", "src_device", "dst_device", "dur_ms", "bytes", "kind")


def _kv_dispersion_growth(ctx: FeatureContext, devices: pl.Series, phase: str, t0: int, span_ns: int) -> float | None:
    net = ctx.layer("network", _KV_COLUMNS, events=("transfer",))
    if net is None or not {"bytes", "dur_ms", "src_device", "dst_device"} <= set(net.columns):
        return None
    end = "dst_device" if phase == "decode" else "src_device"
    kind = (pl.col("kind") == "kv_transfer") if "kind" in net.columns else pl.lit(True)
    q = (
        net.lazy()
        .filter((pl.col("event") == "transfer") & kind & (pl.col("bytes") > 0) & pl.col(end).is_in(pl.Series(devices).implode()))
        .select(_thirds(pl.col("ts"), t0, span_ns), (pl.col("dur_ms") / pl.col("bytes")).alias("x"))
        .group_by("third")
        .agg(pl.len().alias("n"), (pl.col("x").quantile(0.9) / pl.col("x").median()).alias("disp"))
        .collect()
    )
    by = {r["third"]: r for r in q.iter_rows(named=True)}
    early, late = by.get(0), by.get(2)
    if not early or not late or early["n"] < MIN_PER_THIRD or late["n"] < MIN_PER_THIRD:
        return None
    if not _finite(early["disp"]) or not _finite(late["disp"]) or early["disp"] <= 0:
        return None
    return late["disp"] / early["disp"]


# ---- memory-path incoherence ---------------------------------------------------------------

# Decode exec spans name the devices; their samples hold the signals. Read apart: each event's
# rows with its own columns (both events' seven columns were 2 GB at 100M trace rows).
_MEMPATH_SPAN_COLUMNS = ("device", "phase")
_MEMPATH_SAMPLE_COLUMNS = ("device", "gpu_util", "sm_active", "mem_bw_util", "kv_cache_util")


@feature_group(
    "memory_path",
    [
        FeatureSpec(
            "mempath_sm_active_busy_frac", "frac",
            "Mean sm_active over sample windows of decode-serving devices (devices with decode exec spans) in "
            f"which kernels ran (gpu_util >= {BUSY_GPU_UTIL}): the compute activity that compute-centric monitoring sees.",
            ("sm_active", "mem_bw_util"),
        ),
        FeatureSpec(
            "mempath_mem_bw_busy_frac", "frac",
            "Mean mem_bw_util over the same busy sample windows of decode-serving devices.",
            ("sm_active", "mem_bw_util"),
        ),
        FeatureSpec(
            "mempath_memory_compute_gap_frac", "frac",
            "Mean over the same busy windows of mem_bw_util - sm_active: how much busier the memory path is than "
            "the compute units (> 0: memory-bound execution with visible compute headroom).",
            ("sm_active", "mem_bw_util"),
        ),
        FeatureSpec(
            "mempath_kv_saturated_frac", "frac",
            f"Share of the busy sample windows of decode-serving devices with kv_cache_util >= {KV_SATURATED}: "
            "time during which KV-cache residency, not compute, bounds how much work a device can admit.",
            ("kv_cache_util",),
        ),
        FeatureSpec(
            "mempath_kv_p90_frac", "frac",
            "p90 of kv_cache_util over the busy sample windows of decode-serving devices (devices with decode exec "
            "spans; every inference device in unified serving; busy: gpu_util >= "
            f"{BUSY_GPU_UTIL} when gpu_util is sampled): the KV-cache residency of the busiest tenth of the time. "
            "Near 1, a paged KV cache admits new sequences only as old ones finish.",
            ("kv_cache_util",),
        ),
        FeatureSpec(
            "mempath_decode_inflation_ratio", "ratio",
            "Median over completed inference requests that reached decode with one attempt and no preemption of "
            "exec_ms / predicted_ms (realized over predicted service time of the path, dominated by decode): per-token "
            "time inflated beyond the scheduler's compute-based model.",
            ("predicted_ms", "dur_ms"),
        ),
        FeatureSpec(
            "mempath_preempted_frac", "frac",
            "Share of finished inference requests (completed, timed out or dropped) preempted at least once.",
            ("request_id",),
        ),
    ],
)
def memory_path(ctx: FeatureContext) -> GroupResult:
    values: dict[str, float | None] = {}
    details: dict[str, dict[str, object]] = {}
    finished = pl.col("outcome") != "unfinished"
    clean = (
        (pl.col("outcome") == "completed")
        & (pl.col("preemptions").fill_null(0) == 0)
        & (pl.col("attempts") == 1)
        & (pl.col("predicted_ms") > 0)
        & (pl.col("exec_ms") > 0)
        & pl.col("decode_device").is_not_null()
    )
    req = ctx.inference.lazy().select(
        finished.sum().alias("finished"),
        (finished & (pl.col("preemptions").fill_null(0) > 0)).sum().alias("preempted"),
        clean.sum().alias("clean"),
        (pl.col("exec_ms") / pl.col("predicted_ms")).filter(clean).median().alias("inflation"),
    ).collect().row(0, named=True)
    reasons = {
        "mempath_preempted_frac": "no finished inference requests",
        "mempath_decode_inflation_ratio": f"fewer than {MIN_PER_THIRD} completed requests with a prediction that "
        "reached decode with one attempt and no preemption",
    }
    if req["finished"]:
        values["mempath_preempted_frac"] = req["preempted"] / req["finished"]
    if req["clean"] >= MIN_PER_THIRD:
        values["mempath_decode_inflation_ratio"] = req["inflation"]
    gpu = ctx.layer("gpu", _MEMPATH_SAMPLE_COLUMNS, events=("sample",))
    spans = ctx.layer("gpu", _MEMPATH_SPAN_COLUMNS, events=("exec",))
    have = set() if gpu is None or spans is None else (set(gpu.columns) | set(spans.columns)) & ctx.columns
    if gpu is None or spans is None or not {"kv_cache_util", "sm_active", "mem_bw_util"} & have:
        why = "no GPU samples of sm_active, mem_bw_util or kv_cache_util"
        return GroupResult(values, details, reasons=reasons, reason=why)
    decode_devices = (
        spans.lazy()
        .filter((pl.col("phase") == "decode") & pl.col("device").is_not_null())
        .select(pl.col("device").unique())
        .collect()
        if "phase" in have
        else pl.DataFrame(schema={"device": gpu.schema["device"]})
    )
    del spans
    if decode_devices.is_empty():  # unified serving or no phases: every device that served inference
        decode_devices = inference_devices(ctx).to_frame()
    samples = gpu.lazy().join(decode_devices.lazy(), on="device", how="semi")
    if "gpu_util" in have:  # windows in which kernels ran; without gpu_util every sample counts
        samples = samples.filter(pl.col("gpu_util") >= BUSY_GPU_UTIL)
    stats_exprs = [pl.len().alias("n"), pl.col("device").n_unique().alias("devices")]
    if {"sm_active", "mem_bw_util"} <= have:
        stats_exprs += [
            pl.col("sm_active").mean().alias("sm"),
            pl.col("mem_bw_util").mean().alias("mem"),
            (pl.col("mem_bw_util") - pl.col("sm_active")).mean().alias("gap"),
        ]
    if "kv_cache_util" in have:
        kv = pl.col("kv_cache_util").drop_nulls()
        stats_exprs += [(kv >= KV_SATURATED).mean().alias("kv_sat"), kv.mean().alias("kv_mean"),
                        kv.quantile(0.9, "nearest").alias("kv_p90"), kv.len().alias("kv_n")]
    busy = samples.select(stats_exprs).collect().row(0, named=True)
    if busy["n"] < MIN_BUSY_SAMPLES:
        return GroupResult(values, details, reasons=reasons,
                           reason=f"fewer than {MIN_BUSY_SAMPLES} busy samples of decode-serving devices")
    if "sm" in busy:
        values["mempath_sm_active_busy_frac"] = busy["sm"]
        values["mempath_mem_bw_busy_frac"] = busy["mem"]
        values["mempath_memory_compute_gap_frac"] = busy["gap"]
    if busy.get("kv_n"):
        values["mempath_kv_saturated_frac"] = busy["kv_sat"]
        values["mempath_kv_p90_frac"] = busy["kv_p90"]
        details["mempath_kv_saturated_frac"] = {
            "decode_devices": int(busy["devices"]),
            "busy_decode_samples": int(busy["n"]),
            "kv_cache_util_busy_mean": busy["kv_mean"],
        }
    result = GroupResult(values, details, reasons=reasons)
    busy_windows = "in the busy windows of decode-serving devices"
    result.explain(f"no sm_active and mem_bw_util samples {busy_windows}",
                   ["mempath_sm_active_busy_frac", "mempath_mem_bw_busy_frac", "mempath_memory_compute_gap_frac"])
    result.explain(f"no kv_cache_util samples {busy_windows}", ["mempath_kv_saturated_frac", "mempath_kv_p90_frac"])
    return result
