"""Expected service time of a piece of work, estimated from the trace itself when the scheduler
did not record one (`predicted_ms` is optional: vLLM, SGLang and TensorRT-LLM do not emit it).

The estimate is the fleet's typical service time for work of that size: per execution phase, a
least-squares line of the phase's summed exec time per (request, device) on the tokens that phase
processes (prefill on `prompt_tokens`, decode on `output_tokens`, any other phase on both), fitted
over every device of the trace. Comparing realized service with it compares comparable work
across accelerator classes, hosts and time, which is what the rules that read `predicted_ms` need;
it cannot tell whether the scheduler's own model was wrong, only how the work compares with the
fleet norm. Features that use it carry that in their finding's `estimated_inputs`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from coherence_diag.layer_store import Layers
from coherence_diag.request_keys import KEY

PREDICTED_ESTIMATE = (
    "estimated: per phase, a least-squares line of exec time on the phase's tokens over the whole fleet "
    "(prefill on prompt_tokens, decode on output_tokens); no scheduler prediction in the trace"
)
MIN_SPANS_PER_PHASE = 30  # (request, device) pairs of a phase needed to fit its line


def _tokens_of(phase: pl.Expr) -> pl.Expr:
    prompt = pl.col("prompt_tokens").cast(pl.Float64)
    output = pl.col("output_tokens").cast(pl.Float64)
    return (
        pl.when(phase == "prefill").then(prompt)
        .when(phase == "decode").then(output)
        .otherwise(prompt.fill_null(0.0) + output.fill_null(0.0))
    )


def estimate_predicted(
    requests: pl.DataFrame, layers: Layers
) -> tuple[pl.DataFrame, Layers] | None:
    """The request table and layers with an estimated `predicted_ms` (requests: per path; scheduler
    `dispatch` rows: per request and device), or None when the trace has no exec spans to fit on."""
    gpu = layers.read("gpu", ("event", KEY, "device", "phase", "dur_ms"), events=("exec",))
    if gpu is None or not {"dur_ms", "device"} <= set(gpu.columns) or requests.is_empty():
        return None
    phase = pl.col("phase").cast(pl.String) if "phase" in gpu.columns else pl.lit("other")
    tokens = requests.lazy().select(KEY, "prompt_tokens", "output_tokens")
    work = (
        gpu.lazy()
        .filter((pl.col("event") == "exec") & pl.col(KEY).is_not_null() & (pl.col("dur_ms") > 0))
        .group_by(KEY, "device", phase.fill_null("other").alias("phase"))
        .agg(pl.col("dur_ms").sum().alias("service_ms"))
        .join(tokens, on=KEY, how="left")
        .with_columns(_tokens_of(pl.col("phase")).fill_null(0.0).alias("tokens"))
        .collect()
    )
    fits = _fit_per_phase(work)
    if fits.is_empty():
        return None
    per_device = (
        work.lazy()
        .join(fits.lazy(), on="phase", how="inner")
        .group_by(KEY, "device")
        .agg((pl.col("intercept") + pl.col("slope") * pl.col("tokens")).sum().alias("_pred"))
        .filter(pl.col("_pred") > 0)
        .collect()
    )
    if per_device.is_empty():
        return None
    per_request = per_device.group_by(KEY).agg(pl.col("_pred").sum())
    out_requests = (
        requests.join(per_request, on=KEY, how="left", maintain_order="left")
        .with_columns(pl.col("_pred").alias("predicted_ms"))
        .drop("_pred")
        .select(requests.columns)
    )
    out_layers = layers
    # Every row and column: the layer is replaced by one with the estimate (in memory; the
    # projected scheduler layer is a few rows per request, its `dispatch` rows mostly).
    sched = layers.read("scheduler", layers.schema("scheduler"))
    if sched is not None and "device" in sched.columns:
        keyed = per_device.with_columns(pl.col("device").cast(sched.schema["device"]), pl.lit("dispatch").alias("_ev"))
        joined = (
            sched.with_columns(pl.col("event").cast(pl.String).alias("_ev"))
            .join(keyed, on=[KEY, "device", "_ev"], how="left", maintain_order="left")
            .with_columns(pl.col("_pred").alias("predicted_ms"))
        )
        columns = list(sched.columns) + ([] if "predicted_ms" in sched.columns else ["predicted_ms"])
        out_layers = layers.replace("scheduler", joined.select(columns))
    return out_requests, out_layers


def _fit_per_phase(work: pl.DataFrame) -> pl.DataFrame:
    """(phase, intercept, slope): service_ms = intercept + slope * tokens, least squares per phase,
    both non-negative (a negative intercept is refitted through the origin, a negative slope as
    the phase's mean). Rows in a fixed order, so the sums are bit-identical from run to run."""
    rows = []
    for (phase,), part in work.group_by("phase", maintain_order=True):  # a handful of phases
        if part.height < MIN_SPANS_PER_PHASE:
            continue
        part = part.sort(KEY, pl.col("device").cast(pl.String))
        y, t = part["service_ms"].to_numpy(), part["tokens"].to_numpy()
        intercept, slope = np.linalg.lstsq(np.column_stack([np.ones_like(t), t]), y, rcond=None)[0] if np.ptp(t) > 0 else (y.mean(), 0.0)
        if slope < 0:
            intercept, slope = y.mean(), 0.0
        elif intercept < 0:
            intercept, slope = 0.0, float(t @ y / (t @ t))
        rows.append({"phase": phase, "intercept": float(intercept), "slope": float(slope)})
    return pl.DataFrame(rows, schema={"phase": pl.String, "intercept": pl.Float64, "slope": pl.Float64}).sort("phase")
