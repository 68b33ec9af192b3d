"""Virtualization features: does the abstraction layer distort the mapping from intent to effect?

Unit of measurement: one inference execution span (gpu `exec`, phase other than `batch_job`)
joined to the scheduler `dispatch` that started it, which carries the service time the scheduler
expected (`predicted_ms`). The span's *service distortion* is log(realized dur_ms / predicted_ms):
the same work normalized away, what is left is how far execution departed from the control model.

A span ran *virtualized* when its device (or its host, if hypervisor samples name hosts only) has
a hypervisor sample at most 60 s before the span start, or `device_info` flags the device
`virtualized`. The hypervisor sample also gives the span's `steal_frac` / `cotenant_util`.
Virtualization status is therefore per span, not per device: hosts that become VMs mid-trace
(a migration) count as bare metal before and virtualized after.

Virtualized and bare-metal spans are compared only within the same stratum (environment, pool,
phase, accelerator class): the same kind of work on the same kind of device, in the same
environment, scheduled by the same control model (a pool of mixed classes would otherwise
count a slower class as a virtualization effect). A
span's environment is the target env of the latest hypervisor `migrate` of its device or host
before it started, else the env on its gpu row, else the env of its dispatch.
"""

from __future__ import annotations

import math
from typing import cast

import polars as pl
from scipy import stats

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import ASOF_TOLERANCE_NS, DEVICE_TABLE_COLUMNS, device_table

MIN_STRATUM = 30  # spans per side of a stratum comparison
MIN_COUPLING = 50  # virtualized spans with a hypervisor sample
SPAN_CAP = 50_000  # spans per side read exactly; above, a deterministic subsample
SPAN_COLUMNS = ("dur_ms", "predicted_ms")
STRATA = ("_env", "_pool", "_phase", "_acc")
COUPLINGS = (("steal_frac", "virt_steal_coupling_rho"), ("cotenant_util", "virt_cotenant_coupling_rho"))
# Contended vs calm host, from the hypervisor's own readings: 10% CPU steal means the guest waits
# for a physical CPU a tenth of the time (well past the ~1-3% of a quiet host); a co-tenant
# using half of the shared device does the same to the GPU. Calm is below half of each.
CONTENDED_STEAL_FRAC, CALM_STEAL_FRAC = 0.10, 0.05
CONTENDED_COTENANT_FRAC, CALM_COTENANT_FRAC = 0.5, 0.25
MIN_CONTRAST = 20  # virtualized spans on each side (contended, calm)
TIME_BIN_NS = 2_000_000_000  # the fleet-wide load effect is removed per 2-s bin
# The swing of a device's service over time (virt_stretch_swing_ratio): its median distortion per
# 10-s window (contention episodes last seconds to minutes; a window needs a few spans of the
# device), windows with >= 5 spans, devices with >= 6 such windows, strata with >= 3 devices on
# each side (one or two devices are too few to tell a device's own quirks from the hypervisor's).
SWING_WINDOW_NS = 10_000_000_000
MIN_SWING_SPANS, MIN_SWING_WINDOWS, MIN_SWING_DEVICES = 5, 6, 3
# What _spans reads of the layers (a large trace's layers are read from disk, column by column).
# Of the gpu layer every row: a device's host may be named on any of its rows.
# The exec spans (the only gpu rows _spans compares); the device -> host pass reads its two
# columns of every gpu row apart (at 100M rows, 8 columns of every row would be ~2 GB).
_EXEC_COLUMNS = ("ts", "event", "request_key", "device", "dur_ms", "phase", "env")
_DISPATCH_COLUMNS = ("ts", "event", "request_key", "device", "predicted_ms", "pool", "env")
_SAMPLE_COLUMNS = ("ts", "event", "host", "device", "steal_frac", "cotenant_util")  # _hypervisor_samples
_MIGRATE_COLUMNS = ("ts", "event", "host", "device", "env")  # _attach_migrations


def _spread(col: str) -> pl.Expr:
    return pl.col(col).quantile(0.9, "linear") - pl.col(col).quantile(0.1, "linear")


@feature_group(
    "virtualization",
    [
        FeatureSpec(
            "virt_span_share", "frac",
            "Share of inference execution spans (gpu exec, phase other than batch_job) that ran virtualized: "
            "their device (or host) had a hypervisor sample at most 60 s before the span start, or device_info "
            "flags the device virtualized=true.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_dispersion_ratio", "ratio",
            "Spread (p90 - p10) of log(realized dur_ms / predicted_ms) over spans on virtualized devices divided "
            "by the same spread on bare-metal devices, per stratum (env, pool, phase, accelerator class) with >= 30 spans on each "
            "side, averaged weighted by the virtualized spans. 1 = the same work is as predictable under the "
            "hypervisor as on bare metal.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_slowdown_ratio", "ratio",
            "exp of the weighted mean difference, virtualized minus bare metal in the same strata, of the median "
            "log(realized / predicted) service time: the typical extra service time under the hypervisor.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_steal_coupling_rho", "corr",
            "Spearman rank correlation, over virtualized spans, between the span's log(realized / predicted) "
            "(minus its stratum median) and the hypervisor steal_frac sampled at or before the span start.",
            SPAN_COLUMNS + ("steal_frac",),
        ),
        FeatureSpec(
            "virt_cotenant_coupling_rho", "corr",
            "Spearman rank correlation, over virtualized spans, between the span's log(realized / predicted) "
            "(minus its stratum median) and the co-tenant activity cotenant_util sampled at or before the span.",
            SPAN_COLUMNS + ("cotenant_util",),
        ),
        FeatureSpec(
            "virt_coupling_rho", "corr",
            "The stronger (larger) of virt_steal_coupling_rho and virt_cotenant_coupling_rho: how much realized "
            "service time follows hypervisor contention (needs steal_frac or cotenant_util).",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_coupling_p", "p",
            "One-sided p-value (t approximation) that virt_coupling_rho is not positive.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_contention_stretch_ratio", "ratio",
            "exp of the difference of median service distortion, on virtualized devices, between spans that "
            "started while their host was contended (steal_frac >= 0.10, or without steal cotenant_util >= 0.5) "
            "and spans that started while it was calm (steal_frac < 0.05, or cotenant_util < 0.25); each span's "
            "distortion is first taken relative to the median of its stratum (pool, phase) in its 2-s time bin, "
            "so fleet-wide load drops out. The same work on the same kind of device, only the neighbours differ: "
            "1 = contention does not reach the guest's execution. Needs >= 20 spans on each side.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_stretch_swing_ratio", "ratio",
            "How much more the same work's service swings over time on virtualized devices than on bare metal. "
            "Per device, the spread (p90 - p10) over 10-s windows (>= 5 spans each, >= 6 windows) of the window's "
            "median log(realized / predicted), less the device's own median (a fixed overhead drops out); per "
            "stratum (env, pool, phase, accelerator class) with >= 3 devices on each side, the median over its "
            "virtualized devices divided by the median over its bare-metal ones; averaged weighted by the "
            "virtualized devices. Intermittent contention (co-tenants, steal) makes a guest's service come and go; "
            "a calm overhead does not, and a fleet-wide load swing reaches both sides. Needs no hypervisor layer.",
            SPAN_COLUMNS,
        ),
        FeatureSpec(
            "virt_steal_spread", "frac",
            "p90 - p10 of steal_frac over virtualized spans: how much hypervisor contention varied while work ran.",
            SPAN_COLUMNS + ("steal_frac",),
        ),
    ],
)
def virtualization_features(ctx: FeatureContext) -> GroupResult:
    found = _spans(ctx)
    if found is None:
        return GroupResult({}, reason="no inference exec spans with a duration on devices of the scheduler's dispatches")
    spans, share = found
    missing: dict[str, tuple[str, ...]] = {}
    if not {"steal_frac", "cotenant_util"} & ctx.columns:
        missing = {"virt_coupling_rho": ("steal_frac",), "virt_coupling_p": ("steal_frac",)}
    values: dict[str, float | None] = {"virt_span_share": share}
    if spans.is_empty():
        return GroupResult(values, missing=missing,
                           reason="no virtualized device: no hypervisor samples and no device flagged virtualized")
    details: dict[str, dict[str, object]] = {}

    strata = spans.group_by(*STRATA, "_virt").agg(
        pl.len().alias("n"), _spread("_r").alias("spread"), pl.col("_r").median().alias("median")
    )
    virt = strata.filter(pl.col("_virt"))
    bare = strata.filter(~pl.col("_virt"))
    both = virt.join(bare, on=list(STRATA), suffix="_bare", nulls_equal=True).filter(
        (pl.col("n") >= MIN_STRATUM) & (pl.col("n_bare") >= MIN_STRATUM) & (pl.col("spread_bare") > 0)
    ).sort(*STRATA, nulls_last=True)  # the weighted means add in one order, whatever the group-by's
    if both.height:
        row = both.select(
            ((pl.col("spread") / pl.col("spread_bare")) * pl.col("n")).sum() / pl.col("n").sum(),
            ((pl.col("median") - pl.col("median_bare")) * pl.col("n")).sum() / pl.col("n").sum(),
            pl.col("n").sum(),
            pl.col("n_bare").sum(),
        ).row(0)
        values["virt_dispersion_ratio"] = row[0]
        values["virt_slowdown_ratio"] = math.exp(row[1])
        worst = both.with_columns((pl.col("spread") / pl.col("spread_bare")).alias("ratio")).sort(
            "ratio", *STRATA, descending=[True] + [False] * len(STRATA), nulls_last=True
        ).row(0, named=True)
        details["virt_dispersion_ratio"] = {
            "virtualized_spans_compared": int(row[2]),
            "bare_metal_spans_compared": int(row[3]),
            "strata_compared": both.height,
            "most_distorted_pool": worst["_pool"],
            "most_distorted_phase": worst["_phase"],
            "most_distorted_env": worst["_env"],
            "most_distorted_accelerator": worst["_acc"],
            "most_distorted_dispersion_ratio": worst["ratio"],
        }
    else:
        values["virt_dispersion_ratio"] = None
        values["virt_slowdown_ratio"] = None

    coupled = spans.filter(pl.col("_virt")).with_columns(
        (pl.col("_r") - pl.col("_r").median().over(*STRATA)).alias("_res")
    )
    rhos = {}
    for col, name in COUPLINGS:
        sample = coupled.filter(pl.col(col).is_not_null()) if col in coupled.columns else coupled.head(0)
        rho = None
        if sample.height >= MIN_COUPLING and sample[col].n_unique() > 1:
            rho = sample.select(pl.corr("_res", col, method="spearman")).item()
        values[name] = rho
        if rho is not None and rho == rho:
            rhos[name] = (rho, sample.height)
    if rhos:
        best = max(rhos, key=lambda k: (rhos[k][0], k))
        rho, n = rhos[best]
        values["virt_coupling_rho"] = rho
        values["virt_coupling_p"] = _one_sided_p(rho, n)
        details["virt_coupling_rho"] = {"coupled_to": "steal_frac" if "steal" in best else "cotenant_util", "spans": n}
    else:
        values["virt_coupling_rho"] = None
        values["virt_coupling_p"] = None
    values["virt_contention_stretch_ratio"], contrast = _contention_stretch(spans)
    values["virt_stretch_swing_ratio"], swing = _stretch_swing(spans)
    if swing:
        details["virt_stretch_swing_ratio"] = swing
    if contrast:
        details["virt_contention_stretch_ratio"] = contrast
    steal = coupled["steal_frac"].drop_nulls() if "steal_frac" in coupled.columns else None
    values["virt_steal_spread"] = (
        float(steal.quantile(0.9, "linear") - steal.quantile(0.1, "linear")) if steal is not None and steal.len() else None
    )
    no_stratum = f"no stratum (env, pool, phase, accelerator class) with {MIN_STRATUM} spans both virtualized and on bare metal"
    if values["virt_coupling_rho"] is None and "virt_coupling_rho" in missing:
        missing["virt_contention_stretch_ratio"] = ("steal_frac",)
    result = GroupResult(values, details, missing, reasons={
        "virt_contention_stretch_ratio": (
            f"fewer than {MIN_CONTRAST} virtualized spans started on a contended host, or as few on a calm one"
        ),
        "virt_dispersion_ratio": no_stratum,
        "virt_slowdown_ratio": no_stratum,
        "virt_steal_spread": "no steal_frac sample for the virtualized spans",
        "virt_stretch_swing_ratio": (
            f"no stratum with {MIN_SWING_DEVICES} virtualized and {MIN_SWING_DEVICES} bare-metal devices each with "
            f"{MIN_SWING_WINDOWS} windows of {SWING_WINDOW_NS // 1_000_000_000} s with {MIN_SWING_SPANS} spans"
        ),
    })
    for col, name in COUPLINGS:
        result.explain(f"fewer than {MIN_COUPLING} virtualized spans with a {col} sample, or it does not vary", [name])
    return result.explain(
        f"fewer than {MIN_COUPLING} virtualized spans with a varying steal_frac or cotenant_util sample",
        ["virt_coupling_rho", "virt_coupling_p"],
    )


def _stretch_swing(spans: pl.DataFrame) -> tuple[float | None, dict[str, object]]:
    """virt_stretch_swing_ratio (FeatureSpec) and its details; None without a comparable stratum.
    Medians and linear quantiles of each device's windows: the value does not depend on row order."""
    ts = pl.col("ts").cast(pl.Int64)
    per_window = (
        spans.lazy()
        .group_by("device", "_virt", *STRATA, (ts // SWING_WINDOW_NS).alias("_w"))
        .agg(pl.col("_r").median().alias("_m"), pl.len().alias("_n"))
        .filter(pl.col("_n") >= MIN_SWING_SPANS)
    )
    per_device = (
        per_window.with_columns((pl.col("_m") - pl.col("_m").median().over("device", "_virt")).alias("_res"))
        .group_by("device", "_virt", *STRATA)
        .agg(_spread("_res").alias("_swing"), pl.len().alias("_windows"))
        .filter(pl.col("_windows") >= MIN_SWING_WINDOWS)
    )
    sides = per_device.group_by(*STRATA, "_virt").agg(pl.col("_swing").median(), pl.len().alias("_devices")).collect()
    both = (
        sides.filter(pl.col("_virt"))
        .join(sides.filter(~pl.col("_virt")), on=list(STRATA), suffix="_bare", nulls_equal=True)
        .filter((pl.col("_devices") >= MIN_SWING_DEVICES) & (pl.col("_devices_bare") >= MIN_SWING_DEVICES) & (pl.col("_swing_bare") > 0))
        .sort(*STRATA, nulls_last=True)  # the weighted mean adds in one order, whatever the group-by's
    )
    if both.is_empty():
        return None, {}
    ratio, devices, bare = both.select(
        ((pl.col("_swing") / pl.col("_swing_bare")) * pl.col("_devices")).sum() / pl.col("_devices").sum(),
        pl.col("_devices").sum(),
        pl.col("_devices_bare").sum(),
    ).row(0)
    return float(ratio), {"virtualized_devices_compared": int(devices), "bare_metal_devices_compared": int(bare), "strata_compared": both.height}


def _contention_stretch(spans: pl.DataFrame) -> tuple[float | None, dict[str, object]]:
    """Median service distortion on virtualized devices while their host is contended over the
    same while it is calm (virt_contention_stretch_ratio), with the span counts behind it."""
    steal, cot = pl.col("steal_frac"), pl.col("cotenant_util")
    contended = pl.when(steal.is_not_null()).then(steal >= CONTENDED_STEAL_FRAC).otherwise(cot >= CONTENDED_COTENANT_FRAC)
    calm = pl.when(steal.is_not_null()).then(steal < CALM_STEAL_FRAC).otherwise(cot < CALM_COTENANT_FRAC)
    sides = (
        spans.with_columns(
            (pl.col("_r") - pl.col("_r").median().over("_pool", "_phase", pl.col("ts") // TIME_BIN_NS)).alias("_rel")
        )
        .filter(pl.col("_virt"))
        .select(
            pl.col("_rel").filter(contended).median().alias("contended"),
            pl.col("_rel").filter(calm).median().alias("calm"),
            contended.sum().alias("n_contended"),
            calm.sum().alias("n_calm"),
        )
        .row(0, named=True)
    )
    n_hot, n_calm = int(sides["n_contended"] or 0), int(sides["n_calm"] or 0)
    if n_hot < MIN_CONTRAST or n_calm < MIN_CONTRAST:
        return None, {}
    return math.exp(sides["contended"] - sides["calm"]), {"contended_spans": n_hot, "calm_spans": n_calm}


def _one_sided_p(rho: float, n: int) -> float | None:
    if n < 3:
        return None
    if rho >= 1.0:
        return 0.0
    t = rho * math.sqrt((n - 2) / max(1e-12, 1.0 - rho * rho))
    return float(stats.t.sf(t, n - 2))


def _spans(ctx: FeatureContext) -> tuple[pl.DataFrame, float] | None:
    """Inference exec spans of the strata that hold virtualized work, each with its dispatch's
    prediction, stratum and hypervisor sample; and the share of all inference exec spans that
    ran virtualized.

    Only pools that have a virtualized device are read (the others cannot be compared). Above
    SPAN_CAP spans per side (on virtualized devices / on the other devices of those pools) a
    deterministic subsample (by a hash of the span start) is used.
    """
    gpu = ctx.layer("gpu", _EXEC_COLUMNS, events=("exec",))
    if gpu is None or not ctx.has_layer("scheduler") or not {"dur_ms", "predicted_ms", "device"} <= ctx.columns:
        return None
    inference_exec = (pl.col("event") == "exec") & pl.col("request_key").is_not_null() & (pl.col("dur_ms") > 0)
    if "phase" in gpu.columns:
        inference_exec = inference_exec & (pl.col("phase").is_null() | (pl.col("phase") != "batch_job"))
    total = gpu.select(inference_exec.sum()).item()
    if not total:
        return None
    devices = device_table(ctx.layer("gpu", DEVICE_TABLE_COLUMNS, events=("device_info",))).collect()
    samples, key = _hypervisor_samples(ctx.layer("hypervisor", _SAMPLE_COLUMNS, events=("sample",)), devices)
    if key == "host" and samples is not None and "host" in ctx.layers.schema("gpu"):
        # Devices whose rows name a sampled host but that have no device_info host.
        extra = (
            cast(pl.DataFrame, ctx.layer("gpu", ("device", "host"), ordered=False)).lazy()
            .filter(pl.col("device").is_not_null() & pl.col("host").is_in(samples["host"].unique().implode()))
            .group_by("device")
            .agg(pl.col("host").min())
            .join(devices.lazy().filter(pl.col("host").is_not_null()), on="device", how="anti")
            .collect()
        )
        if extra.height:
            devices = pl.concat([devices.filter(~pl.col("device").is_in(extra["device"].implode())), extra], how="diagonal")
    virt_devices = devices.filter(pl.col("virtualized").fill_null(False))["device"]
    if samples is not None:
        if key == "device":
            sampled = samples["device"].unique()
        else:
            sampled = devices.join(samples.select(pl.col("host").unique()), on="host", how="semi")["device"]
        virt_devices = pl.concat([virt_devices, sampled.cast(virt_devices.dtype)]).unique()
    if virt_devices.is_empty():
        return pl.DataFrame(), 0.0
    virt_pools = devices.filter(pl.col("device").is_in(virt_devices.implode()))["pool"].drop_nulls().unique()
    if devices["pool"].null_count() == devices.height:
        candidates = None  # no pool in device_info: every device may share a pool with a VM
    else:
        candidates = pl.concat([
            devices.filter(pl.col("pool").is_in(virt_pools.implode()))["device"], virt_devices
        ]).unique()

    phase = pl.col("phase") if "phase" in gpu.columns else pl.lit(None, pl.Categorical)
    env = pl.col("env") if "env" in gpu.columns else pl.lit(None, pl.Categorical)
    spans = gpu.lazy().filter(inference_exec)
    if candidates is not None:
        spans = spans.filter(pl.col("device").is_in(candidates.implode()))
    spans = spans.select(
        "ts", "request_key", "device", "dur_ms",
        phase.cast(pl.String).alias("_phase"), env.cast(pl.String).alias("_env"),
        pl.col("device").is_in(virt_devices.implode()).alias("_on_virt"),
    ).collect()
    n_on_virt = int(spans["_on_virt"].sum())
    spans = pl.concat([
        _subsample(spans.filter(pl.col("_on_virt"))),
        _subsample(spans.filter(~pl.col("_on_virt"))),
    ])
    sched = ctx.layer("scheduler", _DISPATCH_COLUMNS, events=("dispatch",))
    assert sched is not None  # the trace has scheduler rows (checked above)
    pool = pl.col("pool") if "pool" in sched.columns else pl.lit(None, pl.Categorical)
    sched_env = pl.col("env") if "env" in sched.columns else pl.lit(None, pl.Categorical)
    dispatch = (
        sched.lazy()
        .filter(
            (pl.col("event") == "dispatch")
            & (pl.col("predicted_ms") > 0)
            & pl.col("request_key").is_in(spans["request_key"].unique().implode())
        )
        .select(
            "ts", "request_key", "device", "predicted_ms",
            pool.cast(pl.String).alias("_pool"), sched_env.cast(pl.String).alias("_dispatch_env"),
        )
        .sort("ts")
    )
    # The dispatch that started the span: the latest one of the same request on the same device.
    joined = (
        spans.lazy()
        .sort("ts")
        .join_asof(dispatch, on="ts", by=["request_key", "device"], strategy="backward", check_sortedness=False)
        .filter(pl.col("predicted_ms").is_not_null())
        .with_columns((pl.col("dur_ms") / pl.col("predicted_ms")).log().alias("_r"))
        .join(
            devices.lazy().select(
                "device",
                pl.col("host"),
                pl.col("pool").cast(pl.String).alias("_info_pool"),
                pl.col("virtualized").fill_null(False).alias("_flagged"),
                pl.col("accelerator").cast(pl.String).alias("_acc"),
            ),
            on="device",
            how="left",
        )
        .with_columns(
            pl.coalesce("_pool", "_info_pool").alias("_pool"),
            pl.coalesce("_env", "_dispatch_env").alias("_env"),
            pl.col("_flagged").fill_null(False),
        )
        .drop("_info_pool", "_dispatch_env")
        .collect()
    )
    joined = _attach_migrations(joined, ctx.layer("hypervisor", _MIGRATE_COLUMNS, events=("migrate",)), devices)
    joined = _attach_hypervisor(joined, samples, key)
    joined = joined.with_columns((pl.col("_flagged") | pl.col("_sampled")).alias("_virt"))
    on_virt = joined.filter(pl.col("_on_virt"))
    share = (n_on_virt * float(on_virt["_virt"].mean())) / total if on_virt.height else 0.0
    return joined, share


def _attach_migrations(spans: pl.DataFrame, hyp: pl.DataFrame | None, devices: pl.DataFrame) -> pl.DataFrame:
    """A span's environment is where its device was when it started: after a hypervisor `migrate`
    of its device (or host) the target `env` of the latest such event, else the env on its rows."""
    if hyp is None or "env" not in hyp.columns:
        return spans
    moves = hyp.filter((pl.col("event") == "migrate") & pl.col("env").is_not_null())
    if moves.is_empty():
        return spans
    parts = []
    if "device" in moves.columns:
        parts.append(moves.filter(pl.col("device").is_not_null()).select("device", "ts", "env"))
    if "host" in moves.columns:
        by_host = moves.filter(pl.col("host").is_not_null())
        if "device" in moves.columns:
            by_host = by_host.filter(pl.col("device").is_null())
        parts.append(by_host.select("host", "ts", "env").join(devices.select("device", "host"), on="host").select("device", "ts", "env"))
    table = (
        pl.concat(parts)
        .group_by("device", "ts")
        .agg(pl.col("env").cast(pl.String).max().alias("_moved_env"))
        .sort("ts")
    )
    return (
        spans.sort("ts")
        .join_asof(table, on="ts", by="device", strategy="backward", check_sortedness=False)
        .with_columns(pl.coalesce("_moved_env", "_env").alias("_env"))
        .drop("_moved_env")
    )


def _subsample(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.height <= SPAN_CAP:
        return frame
    keep = -(-frame.height // SPAN_CAP)  # ceil
    return frame.filter(pl.col("ts").hash(seed=17) % keep == 0)


def _hypervisor_samples(hyp: pl.DataFrame | None, devices: pl.DataFrame) -> tuple[pl.DataFrame | None, str]:
    """Hypervisor samples (one row per key and ts, values averaged), keyed by device when every
    sample names one, else by host."""
    cols = [c for c in ("steal_frac", "cotenant_util") if hyp is not None and c in hyp.columns]
    if hyp is None or not cols:
        return None, "device"
    samples = hyp.filter(pl.col("event") == "sample")
    key = "device" if "device" in samples.columns and samples["device"].null_count() == 0 else "host"
    if key not in samples.columns:
        return None, key
    samples = (
        samples.filter(pl.col(key).is_not_null())
        .group_by(key, "ts")
        .agg(*[pl.col(c).mean() for c in cols])
        .with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in ("steal_frac", "cotenant_util") if c not in cols])
    )
    return (samples if samples.height else None), key


def _attach_hypervisor(spans: pl.DataFrame, samples: pl.DataFrame | None, key: str) -> pl.DataFrame:
    if samples is None:
        return spans.with_columns(
            pl.lit(False).alias("_sampled"),
            pl.lit(None, pl.Float64).alias("steal_frac"),
            pl.lit(None, pl.Float64).alias("cotenant_util"),
        )
    right = samples.with_columns(pl.lit(True).alias("_sampled")).sort("ts")
    keys = right.select(pl.col(key).unique())
    matched = (
        spans.join(keys, on=key, how="semi")
        .sort("ts")
        .join_asof(right, on="ts", by=key, strategy="backward", tolerance=ASOF_TOLERANCE_NS, check_sortedness=False)
    )
    rest = spans.join(keys, on=key, how="anti").with_columns(
        pl.lit(None, pl.Boolean).alias("_sampled"),
        pl.lit(None, pl.Float64).alias("steal_frac"),
        pl.lit(None, pl.Float64).alias("cotenant_util"),
    )
    return pl.concat([matched, rest.select(matched.columns)]).with_columns(pl.col("_sampled").fill_null(False))


# --- SLO misses on virtualized devices: the consequence, read from request paths alone ----------
# Without hypervisor samples the contention itself is invisible, but its cost is not: when the
# same work on the same kind of device misses its SLO far more often behind a hypervisor than on
# bare metal, the misses are the hypervisor's. Requests are compared within (environment, pool,
# accelerator class of the device that served them last), so a slower class, a busier pool or a
# move to another environment cancels out.
MIN_SLO_STRATUM = 30  # completed requests with an SLO on each side of a stratum


@feature_group(
    "virtualization_slo",
    [
        FeatureSpec(
            "virt_slo_miss_ratio", "ratio",
            "SLO misses of completed inference requests that ran on a device device_info flags `virtualized` / the "
            "misses expected if they had missed as often as bare-metal requests of the same stratum (env, pool, "
            f"accelerator class of the decode device, else the prefill device); strata with >= {MIN_SLO_STRATUM} requests on each "
            "side; bare-metal rates with a +0.5 continuity correction.",
            ("slo_ms", "dur_ms", "device"),
        ),
        FeatureSpec(
            "virt_slo_miss_excess_frac", "frac",
            "Miss rate of the virtualized requests minus the bare-metal miss rate of their strata, weighted by the "
            "virtualized requests: the SLO attainment lost behind the hypervisor (percentage points as a fraction).",
            ("slo_ms", "dur_ms", "device"),
        ),
        FeatureSpec(
            "virt_slo_miss_p", "p",
            "One-sided Poisson p-value of observing at least the virtualized requests' misses when the bare-metal rates "
            "hold (expected = sum over strata of virtualized requests x bare-metal miss rate).",
            ("slo_ms", "dur_ms", "device"),
        ),
    ],
)
def virtualization_slo(ctx: FeatureContext) -> GroupResult:
    columns = ("virtualized", "decode_accelerator", "prefill_accelerator", "pool", "env", "slo_met")
    served = ctx.completed.lazy().filter(pl.col("slo_met").is_not_null()).select(columns).collect()  # lazy: these columns only
    if served.is_empty() or served["virtualized"].fill_null(False).sum() == 0:
        return GroupResult({}, reason="no completed request with an SLO ran on a device that device_info flags "
                           "`virtualized`")
    strata = (
        served.lazy()
        .with_columns(
            pl.col("virtualized").fill_null(False).alias("_virt"),
            pl.coalesce(pl.col("decode_accelerator"), pl.col("prefill_accelerator")).cast(pl.String).alias("_acc"),
            pl.col("pool").cast(pl.String).alias("_pool"),
            pl.col("env").cast(pl.String).alias("_env"),
        )
        .group_by("_env", "_pool", "_acc")
        .agg(
            pl.col("_virt").sum().alias("n_virt"),
            (pl.col("_virt") & ~pl.col("slo_met")).sum().alias("miss_virt"),
            (~pl.col("_virt")).sum().alias("n_bare"),
            (~pl.col("_virt") & ~pl.col("slo_met")).sum().alias("miss_bare"),
        )
        .filter((pl.col("n_virt") >= MIN_SLO_STRATUM) & (pl.col("n_bare") >= MIN_SLO_STRATUM))
        .with_columns(((pl.col("miss_bare") + 0.5) / (pl.col("n_bare") + 1)).alias("bare_rate"))
        .select(
            pl.col("miss_virt").sum().alias("observed"),
            (pl.col("n_virt") * pl.col("bare_rate")).sum().alias("expected"),
            pl.col("n_virt").sum().alias("n_virt"),
            (pl.col("miss_virt") - pl.col("n_virt") * pl.col("miss_bare") / pl.col("n_bare")).sum().alias("excess"),
            pl.len().alias("strata"),
        )
        .collect()
        .row(0, named=True)
    )
    if not strata["strata"] or not strata["n_virt"]:
        return GroupResult({}, reason=(
            f"no stratum (env, pool, accelerator class) with {MIN_SLO_STRATUM} completed requests with an SLO both on "
            "virtualized and on bare-metal devices"
        ))
    observed, expected = int(strata["observed"]), float(strata["expected"])
    return GroupResult(
        {
            "virt_slo_miss_ratio": observed / expected,
            "virt_slo_miss_excess_frac": float(strata["excess"]) / int(strata["n_virt"]),
            "virt_slo_miss_p": float(stats.poisson.sf(observed - 1, expected)),
        },
        details={"virt_slo_miss_ratio": {
            "virtualized_requests": int(strata["n_virt"]), "virtualized_misses": observed,
            "expected_misses": round(expected, 2), "strata_compared": int(strata["strata"]),
        }},
    )
