"""Device holds: serving devices taken for long stretches by work that is not inference.

An external batch system (a training or offline job scheduler, a reservation) may hold devices
of an inference pool for minutes: the gpu layer shows exec spans of phase `batch_job`, or spans
with no request id, on devices that otherwise serve inference. While a device is held, requests
routed to it wait for it or spill elsewhere. The physics does not depend on who submitted the
work, only on how long a device is unavailable compared with the time scale of interactive
serving: a hold lasting many typical request lifetimes cannot be waited out.

Minimal telemetry: gpu exec spans (`dur_ms`, `device`) and the scheduler's request paths.
"""

from __future__ import annotations

import polars as pl

from coherence_diag.features.fleet import inference_devices
from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import NS_PER_MS

NEEDS = ("dur_ms",)
MIN_HOLDS = 2  # holds needed before their typical length is worth a number
_HOLD_COLUMNS = ("event", "request_key", "device", "dur_ms", "phase")


def _is_hold() -> pl.Expr:
    """An exec span that no inference request owns: a batch_job span, or one without a request."""
    return (pl.col("event") == "exec") & (pl.col("request_key").is_null() | (pl.col("phase") == "batch_job").fill_null(False))


@feature_group(
    "device_holds",
    [
        FeatureSpec(
            "hold_duration_p50_ms", "ms",
            "Median length of device holds: exec spans that no inference request owns (phase batch_job, or no "
            f"request id) on devices that also serve inference. Null with fewer than {MIN_HOLDS} such holds.",
            NEEDS,
        ),
        FeatureSpec(
            "hold_latency_ratio", "ratio",
            "hold_duration_p50_ms / median end-to-end latency of completed inference requests: how many typical "
            "request lifetimes a held device is unavailable. Above ~20 (seconds of serving against minutes of "
            "hold) the requests routed to it cannot wait the hold out. The median, not a tail, so that the waits "
            "the holds cause do not shrink the ratio.",
            NEEDS,
        ),
        FeatureSpec(
            "hold_device_frac", "frac",
            "Time-averaged share of the inference-serving devices that are held (sum of hold time / (devices x "
            "span of inference arrivals)).",
            NEEDS,
        ),
    ],
)
def device_holds(ctx: FeatureContext) -> GroupResult:
    names = ("hold_duration_p50_ms", "hold_latency_ratio", "hold_device_frac")
    gpu = ctx.layer("gpu", _HOLD_COLUMNS, events=("exec",))  # holds are exec spans
    if gpu is None or "dur_ms" not in gpu.columns:
        return GroupResult({n: None for n in names}, missing={n: NEEDS for n in names})
    inf = ctx.inference
    serving = inference_devices(ctx).to_frame()
    phase = pl.col("phase") if "phase" in gpu.columns else pl.lit(None, pl.String)
    holds = (
        gpu.lazy()
        .with_columns(phase.alias("phase"))
        .filter(_is_hold() & pl.col("device").is_in(serving["device"].implode()) & (pl.col("dur_ms") > 0))
        .select("device", "dur_ms")
        .collect()
    )
    span = inf.select(pl.col("arrive_ns").min().alias("lo"), pl.col("arrive_ns").max().alias("hi")).row(0)
    latency_p50 = ctx.completed["latency_ms"].median()
    values: dict[str, float | None] = {n: None for n in names}
    reasons = {"hold_device_frac": "no device served inference", "hold_latency_ratio": "no completed inference requests"}
    if holds.height < MIN_HOLDS:
        values["hold_device_frac"] = 0.0 if serving.height else None
        values["hold_latency_ratio"] = 0.0
        reasons["hold_duration_p50_ms"] = f"fewer than {MIN_HOLDS} device holds by non-inference work"
        return GroupResult(values, reasons=reasons)
    p50 = float(holds["dur_ms"].median())  # type: ignore[arg-type]
    values["hold_duration_p50_ms"] = p50
    values["hold_latency_ratio"] = p50 / latency_p50 if latency_p50 else None  # type: ignore[operator]
    reasons["hold_device_frac"] = "the inference arrivals span no time"
    if span[0] is not None and span[1] > span[0] and serving.height:
        span_ms = (span[1] - span[0]) / NS_PER_MS
        values["hold_device_frac"] = min(1.0, float(holds["dur_ms"].sum()) / (serving.height * span_ms))
    details = {
        "hold_duration_p50_ms": {
            "holds": holds.height,
            "held_devices": holds["device"].n_unique(),
            "serving_devices": serving.height,
            "longest_hold_ms": float(holds["dur_ms"].max()),  # type: ignore[arg-type]
        }
    }
    return GroupResult(values, details=details, reasons=reasons)
