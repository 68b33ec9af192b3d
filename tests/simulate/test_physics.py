"""Each scenario's injected condition is physically present in its trace, measured directly.

Every signature is asserted twice: present in its scenario and absent from the healthy
baseline, so a no-op injection (or a broken measurement) fails the test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from .sim_metrics import (
    arrival_window,
    decode_exec,
    decode_time_share,
    device_info,
    fleet_gpu_util,
    gpu_samples,
    pool_series,
    queue_depth,
    queue_series,
    requests,
    run_lengths,
    sched,
    timeout_rate,
)

Trace = Callable[[str], pl.DataFrame]
Signature = Callable[[pl.DataFrame], dict[str, object]]


def _cv(s: pl.Series) -> float:
    return float(s.std() / s.mean())


# --- signatures --------------------------------------------------------------------------------


def sig_healthy(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    util = fleet_gpu_util(df)
    qmax = int(queue_series(df, "prefill")["depth"].max())
    ok = r["met_slo"].mean() >= 0.98 and timeout_rate(r) < 0.002 and r["n_retry"].sum() == 0 and 0.45 <= util <= 0.7 and qmax <= 15
    return {"present": ok, "slo": r["met_slo"].mean(), "util": util, "qmax": qmax}


def sig_legitimate_queueing(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    pq = queue_series(df, "prefill")["depth"]
    longest = max(run_lengths((pq >= 5).to_list()), default=0)
    decode_q = int(queue_series(df, "decode")["depth"].max())
    ok = pq.max() >= 15 and longest <= 8 and decode_q == 0 and r["met_slo"].mean() >= 0.98 and timeout_rate(r) == 0
    return {"present": ok, "peak": pq.max(), "longest_run_s": longest, "decode_q": decode_q, "slo": r["met_slo"].mean()}


def sig_latency_asymmetry_drift(df: pl.DataFrame) -> dict[str, object]:
    d = decode_exec(df).with_columns(t=(pl.col("ts") - pl.col("ts").min()).dt.total_seconds())
    end = d["t"].max()

    def drift(acc: str) -> float:
        x = d.filter(pl.col("accelerator") == acc)
        return float(x.filter(pl.col("t") > 0.7 * end)["ratio"].median() / x.filter(pl.col("t") < 0.2 * end)["ratio"].median())

    xfer = df.filter(pl.col("event") == "transfer").join(device_info(df).select(dst_device="device", acc="accelerator"), on="dst_device")
    # spread of log(time per byte) of large KV transfers into the drifting class, late vs early
    xfer = xfer.filter((pl.col("acc") == "A100-40GB") & (pl.col("bytes") > 100e6)).with_columns(
        log_per_byte=(pl.col("dur_ms") / pl.col("bytes")).log(), t=(pl.col("ts") - pl.col("ts").min()).dt.total_seconds()
    )
    xend = xfer["t"].max()
    late, early = xfer.filter(pl.col("t") > 0.7 * xend), xfer.filter(pl.col("t") < 0.2 * xend)
    xfer_cv_growth = float(late["log_per_byte"].std() / early["log_per_byte"].std())
    r = requests(df)
    tail_growth = r.filter(pl.col("t_s") > 0.6 * r["t_s"].max())["latency_ms"].quantile(0.99) / r.filter(
        pl.col("t_s") < 0.3 * r["t_s"].max()
    )["latency_ms"].quantile(0.99)
    a100, l40s = drift("A100-40GB"), drift("L40S")
    ok = a100 > 1.6 and l40s < 1.15 and xfer_cv_growth > 2.0 and tail_growth > 1.2
    return {"present": ok, "a100": a100, "l40s": l40s, "xfer_cv_growth": xfer_cv_growth, "tail_growth": tail_growth}


def sig_memory_path_incoherence(df: pl.DataFrame) -> dict[str, object]:
    g = gpu_samples(df).filter(pl.col("pool").str.starts_with("decode") & arrival_window(df))
    mem, sm, kv = g["mem_bw_util"].mean(), g["sm_active"].mean(), g["kv_cache_util"].mean()
    preempts = sched(df).filter(pl.col("event") == "preempt").height
    inflation = float(decode_exec(df)["ratio"].median())
    ok = mem > 0.85 and sm < 0.6 and kv > 0.7 and preempts > 0 and inflation > 1.5
    return {"present": ok, "mem_bw": mem, "sm_active": sm, "kv": kv, "preempts": preempts, "per_token_inflation": inflation}


def sig_interconnect_capacity_inaccessibility(df: pl.DataFrame) -> dict[str, object]:
    info = device_info(df)
    t_new = info["first_seen"].max()
    new = info.filter(pl.col("first_seen") == t_new)["device"]
    if t_new == info["first_seen"].min():
        return {"present": False, "new_devices": 0}
    settle = t_new + pl.duration(seconds=10)
    g = gpu_samples(df).filter((pl.col("ts") > settle) & arrival_window(df))
    is_new = pl.col("device").is_in(new.implode())
    new_util = g.filter(is_new)["gpu_util"].mean()
    old_util = g.filter(pl.col("pool").str.starts_with("prefill") & ~is_new)["gpu_util"].mean()
    links = df.filter((pl.col("layer") == "network") & (pl.col("event") == "sample") & (pl.col("ts") > settle) & arrival_window(df))
    hottest = links.group_by("link").agg(pl.col("link_util").mean())["link_util"].max()
    queued = queue_series(df, "prefill").filter(pl.col("ts") > settle)["depth"].mean()
    r = requests(df).filter(pl.col("prefill_device").is_in(new.implode()) & pl.col("completed"))
    xfer_share = float((r["xfer_ms"] / r["latency_ms"]).median())
    ok = new_util < 0.35 and old_util > 0.75 and hottest > 0.9 and queued > 1 and xfer_share > 0.3
    return {"present": ok, "new_util": new_util, "old_util": old_util, "hottest_link": hottest, "queue": queued, "xfer_share": xfer_share}


def sig_virtualization_control_distortion(df: pl.DataFrame) -> dict[str, object]:
    d = decode_exec(df).filter(pl.col("tokens") > 20)
    virt, bare = d.filter(pl.col("virtualized")), d.filter(~pl.col("virtualized"))
    cv_ratio = _cv(virt["ratio"]) / _cv(bare["ratio"]) if virt.height > 20 else 0.0
    h = df.filter((pl.col("layer") == "hypervisor") & (pl.col("event") == "sample"))
    steal_max = float(h["steal_frac"].max() or 0.0)
    # does realized/predicted track the steal the guest saw when the work was dispatched?
    hs = h.select("device", sec="ts", steal="steal_frac")
    dv = virt.with_columns(sec=(pl.col("ts").dt.truncate("1s") + pl.duration(seconds=1)).cast(pl.Datetime("ns", "UTC"))).join(hs, on=["device", "sec"])
    corr = float(np.corrcoef(dv["ratio"].to_numpy(), dv["steal"].to_numpy())[0, 1]) if dv.height > 20 else 0.0
    ok = cv_ratio > 3 and steal_max > 0.2 and corr > 0.4
    return {"present": ok, "cv_ratio": cv_ratio, "steal_max": steal_max, "corr": corr}


def sig_migration_reconfiguration_risk(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    envs = r.group_by("env").agg(
        t=pl.col("t_s").min(),
        p99=pl.col("latency_ms").quantile(0.99),
        timeouts=((pl.col("n_timeout") > 0) & ~pl.col("completed")).mean(),
        drops=(pl.col("n_drop") > 0).mean(),
        prompt=pl.col("prompt_tokens").mean(),
    ).sort("t")
    migrates = df.filter(pl.col("event") == "migrate").height
    if envs.height != 2:
        return {"present": False, "envs": envs.height}
    before, after = envs.row(0, named=True), envs.row(1, named=True)
    p99_ratio = after["p99"] / before["p99"]
    no_failures = max(before["timeouts"], after["timeouts"], before["drops"], after["drops"]) < 0.005
    same_mix = abs(after["prompt"] / before["prompt"] - 1) < 0.1
    ok = migrates > 0 and p99_ratio > 1.3 and no_failures and same_mix
    return {"present": ok, "p99_ratio": p99_ratio, "no_failures": no_failures, "same_mix": same_mix, "migrates": migrates}


def sig_batch_scheduling_conflict(df: pl.DataFrame) -> dict[str, object]:
    x = df.filter(pl.col("event") == "exec").drop("pool").join(device_info(df).select("device", "pool"), on="device")
    shared = x.group_by("pool").agg(jobs=(pl.col("phase") == "batch_job").sum(), prefills=(pl.col("phase") == "prefill").sum())
    shared = shared.filter((pl.col("jobs") > 0) & (pl.col("prefills") > 0))
    if shared.height == 0:
        return {"present": False, "shared_pool": None}
    pool = shared["pool"][0]
    jobs = x.filter((pl.col("phase") == "batch_job") & (pl.col("pool") == pool))
    busy = jobs.select(js="ts", je=pl.col("ts") + pl.duration(microseconds=(pl.col("dur_ms") * 1e3).cast(pl.Int64))).sort("js")
    r = requests(df).filter(pl.col("entry_pool") == pool).sort("t_arrive")
    r = r.join_asof(busy, left_on="t_arrive", right_on="js").with_columns(behind=pl.col("t_arrive") < pl.col("je").fill_null(pl.col("t_arrive")))
    behind = r.filter(pl.col("behind"))["queue_wait_ms"].mean() or 0.0
    clear = r.filter(~pl.col("behind"))["queue_wait_ms"].mean() or 0.0
    ok = behind > 1000 and behind > 10 * clear
    return {"present": ok, "pool": pool, "wait_behind_batch_ms": behind, "wait_otherwise_ms": clear}


def sig_burst_amplification(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    pq = queue_series(df, "prefill")["depth"]
    longest = max(run_lengths((pq >= 50).to_list()), default=0)
    handoffs = r.filter(pl.col("t_dispatch2") < r["t_arrive"].max()).group_by(pl.col("t_dispatch2").dt.truncate("10s")).len()
    decode_wave = handoffs["len"].max() / handoffs["len"].median()
    ok = timeout_rate(r) > 0.02 and pq.max() > 100 and longest > 12 and decode_wave > 1.5
    return {"present": ok, "timeouts": timeout_rate(r), "peak": pq.max(), "backlog_s": longest, "decode_wave": decode_wave}


def sig_slot_locking(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    low_share = decode_time_share(df, r, priority=2)
    p0_wait = float(r.filter(pl.col("priority") == 0)["decode_wait_ms"].quantile(0.9))
    ok = low_share > 0.6 and p0_wait > 1000
    return {"present": ok, "low_priority_slot_share": low_share, "p0_decode_wait_p90_ms": p0_wait}


def sig_idle_overload_oscillation(df: pl.DataFrame) -> dict[str, object]:
    episodes = [n for n in run_lengths((queue_series(df, "prefill")["depth"] >= 20).to_list()) if n >= 2]
    idle = float((pool_series(df, "prefill")["gpu_util"] < 0.2).mean())
    ok = len(episodes) >= 4 and idle > 0.2
    return {"present": ok, "overload_episodes": len(episodes), "idle_frac": idle}


def sig_energy_latency_mismatch(df: pl.DataFrame) -> dict[str, object]:
    g = gpu_samples(df).filter(pl.col("pool").str.starts_with("decode") & arrival_window(df))
    power_cv = float(g.group_by("device").agg(cv=pl.col("power_w").std() / pl.col("power_w").mean())["cv"].median())
    w = requests(df).filter(pl.col("completed")).group_by((pl.col("t_s") // 10).alias("w")).agg(pl.col("latency_ms").median())
    swing = float(w["latency_ms"].max() / w["latency_ms"].min())
    ok = power_cv < 0.02 and swing > 2.0
    return {"present": ok, "power_cv": power_cv, "latency_swing": swing}


def sig_retry_amplification(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    s = sched(df)
    attempts = s.filter(pl.col("event").is_in(["retry"]) | ((pl.col("event") == "arrive") & (pl.col("attempt") == 0)))
    per = attempts.group_by(pl.col("ts").dt.truncate("10s")).agg(n=pl.len(), retries=(pl.col("event") == "retry").sum())
    per = per.filter(pl.col("ts") < r["t_arrive"].max())
    offered = r.height / r["t_s"].max() * 10  # first attempts per 10 s
    retry_frac = float((r["n_retry"] > 0).mean())
    load_gain = attempts.height / r.height  # attempts the fleet had to serve per request offered
    storm_windows = int((per["retries"] >= 0.1 * offered).sum())  # 10-s windows where retries are >=10% extra load
    # retries come from timed-out attempts, i.e. they are launched when latency is high
    timed_out_first = s.filter((pl.col("event") == "timeout") & (pl.col("attempt") == 0)).height
    ok = retry_frac > 0.05 and load_gain > 1.15 and storm_windows >= 6 and timed_out_first > 0
    return {"present": ok, "retry_frac": retry_frac, "load_gain": load_gain, "storm_windows": storm_windows}


def sig_queue_wait_dominance(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df).filter(pl.col("completed"))
    share = float(((r["queue_wait_ms"] + r["decode_wait_ms"]) / r["latency_ms"]).median())
    util = fleet_gpu_util(df)
    ok = share > 0.5 and util < 0.7
    return {"present": ok, "wait_share": share, "util": util}


def sig_sla_degradation_without_shortage(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    q = queue_depth(df).filter(pl.col("pool").str.starts_with("prefill") | pl.col("pool").str.starts_with("decode"))
    util = fleet_gpu_util(df)
    ok = (
        r["met_slo"].mean() < 0.9
        and util < 0.55
        and q["depth"].mean() < 1
        and q["depth"].max() < 10
        and timeout_rate(r) < 0.005
        and r["n_retry"].sum() == 0
    )
    return {"present": ok, "slo": r["met_slo"].mean(), "util": util, "qmean": q["depth"].mean(), "qmax": q["depth"].max()}


SIGNATURES: dict[str, Signature] = {
    "healthy": sig_healthy,
    "legitimate-queueing": sig_legitimate_queueing,
    "latency-asymmetry-drift": sig_latency_asymmetry_drift,
    "memory-path-incoherence": sig_memory_path_incoherence,
    "interconnect-capacity-inaccessibility": sig_interconnect_capacity_inaccessibility,
    "virtualization-control-distortion": sig_virtualization_control_distortion,
    "migration-reconfiguration-risk": sig_migration_reconfiguration_risk,
    "batch-scheduling-conflict": sig_batch_scheduling_conflict,
    "burst-amplification": sig_burst_amplification,
    "slot-locking": sig_slot_locking,
    "idle-overload-oscillation": sig_idle_overload_oscillation,
    "energy-latency-mismatch": sig_energy_latency_mismatch,
    "retry-amplification": sig_retry_amplification,
    "queue-wait-dominance": sig_queue_wait_dominance,
    "sla-degradation-without-shortage": sig_sla_degradation_without_shortage,
}


def test_every_scenario_has_a_signature() -> None:
    from coherence_diag.simulate import SCENARIOS

    assert set(SIGNATURES) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_present_in_its_scenario(name: str, trace: Trace) -> None:
    sig = SIGNATURES[name](trace(name))
    assert sig["present"], sig


@pytest.mark.parametrize("name", sorted(set(SIGNATURES) - {"healthy"}))
def test_signature_absent_from_healthy(name: str, trace: Trace) -> None:
    sig = SIGNATURES[name](trace("healthy"))
    assert not sig["present"], sig


@pytest.mark.parametrize("name", ["legitimate-queueing", "burst-amplification", "retry-amplification", "sla-degradation-without-shortage"])
def test_healthy_signature_separates_degraded_scenarios(name: str, trace: Trace) -> None:
    """legitimate queueing stays healthy-looking in outcome terms; real instability does not."""
    healthy_like = sig_healthy(trace(name))
    outcome_ok = healthy_like["slo"] >= 0.98  # type: ignore[operator]
    assert outcome_ok == (name == "legitimate-queueing"), healthy_like


def test_burst_and_legitimate_queueing_differ_in_persistence(trace: Trace) -> None:
    legit, burst = sig_legitimate_queueing(trace("legitimate-queueing")), sig_legitimate_queueing(trace("burst-amplification"))
    assert legit["present"] and not burst["present"]
    assert burst["longest_run_s"] > 2 * legit["longest_run_s"]  # type: ignore[operator]


@pytest.mark.parametrize("name", ["latency-asymmetry-drift", "memory-path-incoherence", "virtualization-control-distortion"])
def test_predicted_ms_is_the_nominal_model_and_realized_diverges_only_under_injection(name: str, trace: Trace) -> None:
    healthy = decode_exec(trace("healthy"))["ratio"].median()
    injected = decode_exec(trace(name))
    if name == "virtualization-control-distortion":  # only the VMs' work is distorted
        injected = injected.filter(pl.col("virtualized"))
    assert 0.9 < healthy < 1.15
    assert injected["ratio"].quantile(0.95) > 1.4 * healthy
