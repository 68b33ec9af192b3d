"""Measurements taken directly from a simulated trace with Polars (no coherence_diag code).

The physics tests compare these numbers between scenarios; keeping them here makes each
test read as "scenario X shows Y".
"""

from __future__ import annotations

import polars as pl

US = 1e3  # microseconds per millisecond


def _ms(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / US


def sched(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("layer") == "scheduler")


def device_info(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("event") == "device_info").select("device", "host", "pool", "accelerator", "virtualized", first_seen="ts")


def gpu_samples(df: pl.DataFrame) -> pl.DataFrame:
    g = df.filter((pl.col("layer") == "gpu") & (pl.col("event") == "sample")).drop("pool", "host", "accelerator", "virtualized")
    return g.join(device_info(df), on="device")


def requests(df: pl.DataFrame) -> pl.DataFrame:
    """One row per inference request: arrival, outcome, latency, queue waits, TTFT, env."""
    s = sched(df)
    first = s.filter((pl.col("event") == "arrive") & (pl.col("attempt") == 0) & (pl.col("workload_class") == "inference"))
    base = first.select("request_id", "priority", "slo_ms", "prompt_tokens", "env", t_arrive="ts", entry_pool="pool")
    outcome = s.group_by("request_id").agg(
        t_complete=pl.col("ts").filter(pl.col("event") == "complete").min(),
        n_timeout=(pl.col("event") == "timeout").sum(),
        n_drop=(pl.col("event") == "drop").sum(),
        n_retry=(pl.col("event") == "retry").sum(),
        n_preempt=(pl.col("event") == "preempt").sum(),
        t_first_token=pl.col("ts").filter(pl.col("event") == "first_token").min(),
    )
    # dispatches of the attempt that completed (or the last attempt)
    last_attempt = s.group_by("request_id").agg(final_attempt=pl.col("attempt").max())
    disp = (
        s.filter(pl.col("event") == "dispatch")
        .join(last_attempt, on="request_id")
        .filter(pl.col("attempt") == pl.col("final_attempt"))
        .sort("ts")
        .group_by("request_id")
        .agg(
            t_dispatch1=pl.col("ts").first(),
            t_dispatch2=pl.col("ts").get(1, null_on_oob=True),
            prefill_device=pl.col("device").first(),
            decode_device=pl.col("device").get(1, null_on_oob=True),
            decode_pool=pl.col("pool").get(1, null_on_oob=True),
            decode_predicted_ms=pl.col("predicted_ms").get(1, null_on_oob=True),
        )
    )
    att_start = (
        s.filter(pl.col("event").is_in(["arrive", "retry"]))
        .join(last_attempt, on="request_id")
        .filter(pl.col("attempt") == pl.col("final_attempt"))
        .group_by("request_id")
        .agg(t_attempt=pl.col("ts").min())
    )
    xfer = (
        df.filter(pl.col("event") == "transfer")
        .sort("ts")
        .group_by("request_id")
        .agg(t_xfer=pl.col("ts").last(), xfer_ms=pl.col("dur_ms").last(), link=pl.col("link").last())
    )
    out = (
        base.join(outcome, on="request_id", how="left")
        .join(disp, on="request_id", how="left")
        .join(att_start, on="request_id", how="left")
        .join(xfer, on="request_id", how="left")
    )
    return out.with_columns(
        latency_ms=_ms(pl.col("t_complete") - pl.col("t_arrive")),
        queue_wait_ms=_ms(pl.col("t_dispatch1") - pl.col("t_attempt")),
        decode_wait_ms=_ms(pl.col("t_dispatch2") - (pl.col("t_xfer") + pl.duration(microseconds=(pl.col("xfer_ms") * US).cast(pl.Int64)))),
        ttft_ms=_ms(pl.col("t_first_token") - pl.col("t_arrive")),
        completed=pl.col("t_complete").is_not_null(),
        met_slo=(_ms(pl.col("t_complete") - pl.col("t_arrive")) <= pl.col("slo_ms")).fill_null(False),
        t_s=_ms(pl.col("t_arrive") - pl.col("t_arrive").min()) / 1e3,
    )


def slo_attainment(df: pl.DataFrame) -> float:
    return float(requests(df)["met_slo"].mean())


def timeout_rate(req: pl.DataFrame) -> float:
    """Requests that timed out and never completed, over all requests."""
    return float(((req["n_timeout"] > 0) & ~req["completed"]).mean())


def queue_depth(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("layer") == "queue").select("ts", "queue", "pool", "depth")


def decode_exec(df: pl.DataFrame) -> pl.DataFrame:
    """Completed (unpreempted) decode spans with realized vs predicted time."""
    s = sched(df).filter(pl.col("event") == "dispatch").select("request_id", "device", "ts", "predicted_ms")
    x = df.filter((pl.col("event") == "exec") & (pl.col("phase") == "decode")).select("request_id", "device", "ts", "dur_ms", "tokens", "batch_size")
    j = x.join(s, on=["request_id", "device", "ts"], how="inner")
    return j.join(device_info(df).select("device", "pool", "accelerator", "virtualized", "host"), on="device").with_columns(
        ratio=pl.col("dur_ms") / pl.col("predicted_ms")
    )


def decode_time_share(df: pl.DataFrame, req: pl.DataFrame, priority: int) -> float:
    """Share of all decode exec time spent on requests of `priority` (req: `requests(df)`)."""
    x = df.filter((pl.col("event") == "exec") & (pl.col("phase") == "decode")).drop("priority")
    x = x.join(req.select("request_id", "priority"), on="request_id")
    return float(x.filter(pl.col("priority") == priority)["dur_ms"].sum() / x["dur_ms"].sum())


def longest_run(flags: list[bool]) -> int:
    best = cur = 0
    for f in flags:
        cur = cur + 1 if f else 0
        best = max(best, cur)
    return best


# --- per-scenario signatures: each returns the measured numbers; the tests assert on them --------


def arrival_window(df: pl.DataFrame) -> pl.Expr:
    last = sched(df).filter(pl.col("event") == "arrive")["ts"].max()
    return pl.col("ts") <= last


def fleet_gpu_util(df: pl.DataFrame) -> float:
    return float(gpu_samples(df).filter(arrival_window(df))["gpu_util"].mean())


def pool_series(df: pl.DataFrame, prefix: str, col: str = "gpu_util") -> pl.DataFrame:
    """Per-second mean of a gpu column over the pools whose name starts with prefix."""
    g = gpu_samples(df).filter(pl.col("pool").str.starts_with(prefix) & arrival_window(df))
    return g.group_by("ts").agg(pl.col(col).mean()).sort("ts")


def queue_series(df: pl.DataFrame, prefix: str) -> pl.DataFrame:
    q = queue_depth(df).filter(pl.col("pool").str.starts_with(prefix))
    return q.group_by("ts").agg(pl.col("depth").sum()).sort("ts")


def run_lengths(flags: list[bool]) -> list[int]:
    runs, cur = [], 0
    for f in flags:
        if f:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    return runs + ([cur] if cur else [])


# --- trace-format v1 invariants -------------------------------------------------------------

ALLOWED_EVENTS = {
    "scheduler": {"arrive", "dispatch", "first_token", "complete", "timeout", "drop", "retry", "preempt"},
    "queue": {"sample"},
    "gpu": {"exec", "sample", "device_info"},
    "network": {"transfer", "sample"},
    "hypervisor": {"sample", "migrate"},
}
FRACTIONS = ("gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "link_util", "steal_frac", "cotenant_util")
TERMINAL = ("complete", "timeout", "drop")


def trace_violations(df: pl.DataFrame) -> list[str]:
    """Every way `df` breaks the trace-format contract or the simulator's own promises."""
    bad: list[str] = []
    for col in ("ts", "layer", "event"):
        if col not in df.columns:
            return [f"missing column {col}"]
    if df.schema["ts"] != pl.Datetime("ns", "UTC"):
        bad.append(f"ts dtype {df.schema['ts']}")
    if df["ts"].null_count():
        bad.append("null ts")
    for layer, events in ALLOWED_EVENTS.items():
        got = set(df.filter(pl.col("layer") == layer)["event"].unique().to_list())
        if got - events:
            bad.append(f"{layer}: unknown events {sorted(got - events)}")
    if set(df["layer"].unique().to_list()) - set(ALLOWED_EVENTS):
        bad.append("unknown layer")
    for col in FRACTIONS:
        v = df[col].drop_nulls()
        if len(v) and (v.min() < 0 or v.max() > 1 or v.is_nan().any()):
            bad.append(f"{col} outside [0, 1]")
    spans = df.filter(pl.col("event").is_in(["exec", "transfer"]))
    if spans["dur_ms"].null_count() or not spans["dur_ms"].is_finite().all() or (spans["dur_ms"] < 0).any():
        bad.append("span dur_ms missing, negative or not finite")
    if (df["power_w"].drop_nulls() < 0).any() or not df["power_w"].drop_nulls().is_finite().all():
        bad.append("power_w negative or not finite")
    if (df["depth"].drop_nulls() < 0).any():
        bad.append("negative queue depth")
    if df.filter(pl.col("event") == "transfer").select((pl.col("bytes") <= 0) | pl.col("bytes").is_null()).to_series().any():
        bad.append("transfer without bytes")
    if df.is_duplicated().any():
        bad.append(f"{int(df.is_duplicated().sum())} duplicate rows")

    s = sched(df)
    if s["request_id"].null_count():
        bad.append("scheduler row without request_id")
    heads = s.filter(pl.col("event").is_in(["arrive", "retry"]))
    if not set(heads["priority"].drop_nulls().unique().to_list()) <= {0, 1, 2}:
        bad.append("priority outside 0..2")
    if not set(heads["workload_class"].drop_nulls().unique().to_list()) <= {"inference", "batch"}:
        bad.append("unknown workload_class")
    starts = heads.group_by("request_id", "attempt").agg(t_start=pl.col("ts").min())
    terms = s.filter(pl.col("event").is_in(TERMINAL)).group_by("request_id", "attempt").agg(n_term=pl.len(), t_term=pl.col("ts").max())
    per_attempt = starts.join(terms, on=["request_id", "attempt"], how="full", coalesce=True)
    if per_attempt["n_term"].null_count() or (per_attempt["n_term"] != 1).any():
        bad.append("an attempt without exactly one terminal event (complete/timeout/drop)")
    if per_attempt["t_start"].null_count():
        bad.append("a terminal event for an attempt that never arrived")
    elif (per_attempt["t_term"] < per_attempt["t_start"]).any():
        bad.append("terminal event before the attempt's arrival")
    first = s.filter((pl.col("event") == "arrive") & (pl.col("attempt") == 0)).select("request_id", t0="ts")
    if first["request_id"].n_unique() != first.height:
        bad.append("request with several attempt-0 arrivals")
    if set(s["request_id"].unique().to_list()) - set(first["request_id"].to_list()):
        bad.append("request without an attempt-0 arrive")
    done = s.filter(pl.col("event") == "complete").group_by("request_id").agg(n=pl.len(), t=pl.col("ts").min())
    if (done["n"] > 1).any():
        bad.append("request completed more than once")
    late = s.filter(pl.col("event").is_in(["dispatch", "first_token", "complete", "preempt"])).join(first, on="request_id")
    if (late["ts"] < late["t0"]).any():
        bad.append("dispatch/first_token/complete before the request arrived")

    info = df.filter(pl.col("event") == "device_info")
    if info["device"].n_unique() != info.height or info.select(["device", "host", "pool", "accelerator", "virtualized"]).null_count().sum_horizontal().item():
        bad.append("device_info rows missing or not one per device")
    known = set(info["device"].to_list())
    used = set(df.filter(pl.col("layer").is_in(["gpu", "hypervisor", "scheduler"]))["device"].drop_nulls().unique().to_list())
    used |= set(df["src_device"].drop_nulls().unique().to_list()) | set(df["dst_device"].drop_nulls().unique().to_list())
    if used - known:
        bad.append("rows name devices without device_info")
    for layer in ("gpu", "hypervisor"):
        smp = df.filter((pl.col("layer") == layer) & (pl.col("event") == "sample"))
        if smp.select("device", "ts").is_duplicated().any():
            bad.append(f"{layer} samples not unique per device and second")
    return bad
