"""Every scenario that applies on a unified fleet (colocated, pools) still carries its condition
there, measured directly and fleet-agnostically, and the same measure stays quiet on the healthy
baseline of the same fleet shape (as test_physics.py does for the catalogued, disaggregated
scenarios)."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from coherence_diag.simulate import SCENARIOS, Shape, simulate
from coherence_diag.simulate.variants import refusal

from .sim_metrics import arrival_window, decode_time_share, device_info, gpu_samples, queue_depth, requests, run_lengths, sched, timeout_rate

UNIFIED = ("colocated", "pools")
Signature = Callable[[pl.DataFrame], dict[str, object]]
_cache: dict[tuple[str, str], pl.DataFrame] = {}


def shaped(name: str, fleet: str) -> pl.DataFrame:
    if (name, fleet) not in _cache:
        _cache[(name, fleet)] = simulate(name, 0, shape=Shape(fleet=fleet))
    return _cache[(name, fleet)]


def depth(df: pl.DataFrame) -> pl.Series:
    return queue_depth(df).group_by("ts").agg(pl.col("depth").sum()).sort("ts")["depth"]


def per_token(df: pl.DataFrame) -> pl.DataFrame:
    x = df.filter((pl.col("event") == "exec") & (pl.col("phase") == "decode") & (pl.col("tokens") >= 20))
    x = x.drop("accelerator", "virtualized").join(device_info(df).select("device", "accelerator", "virtualized"), on="device")
    return x.with_columns(per_tok=pl.col("dur_ms") / pl.col("tokens"), t=(pl.col("ts") - pl.col("ts").min()).dt.total_seconds())


def _cv(s: pl.Series) -> float:
    return float(s.std() / s.mean())


def sig_legitimate_queueing(df: pl.DataFrame) -> dict[str, object]:
    q, r = depth(df), requests(df)
    longest = max(run_lengths((q >= 5).to_list()), default=0)
    ok = q.max() >= 8 and longest <= 8 and r["met_slo"].mean() >= 0.97 and timeout_rate(r) == 0
    return {"present": ok, "peak": q.max(), "longest_s": longest, "slo": r["met_slo"].mean()}


def sig_latency_asymmetry_drift(df: pl.DataFrame) -> dict[str, object]:
    x = per_token(df)
    end = x["t"].max()

    def drift(acc: str) -> float:
        a = x.filter(pl.col("accelerator") == acc)
        return float(a.filter(pl.col("t") > 0.7 * end)["per_tok"].median() / a.filter(pl.col("t") < 0.2 * end)["per_tok"].median())

    a100, l40s = drift("A100-40GB"), drift("L40S")
    return {"present": a100 > 1.8 and a100 > 1.5 * l40s, "a100": a100, "l40s": l40s}


def sig_virtualization_control_distortion(df: pl.DataFrame) -> dict[str, object]:
    # prefill spans: the same work per token, never paused by other work on the device
    x = df.filter((pl.col("event") == "exec") & (pl.col("phase") == "prefill")).drop("virtualized")
    x = x.join(device_info(df).select("device", "virtualized"), on="device").with_columns(per_tok=pl.col("dur_ms") / pl.col("tokens"))
    cv_ratio = _cv(x.filter(pl.col("virtualized"))["per_tok"]) / _cv(x.filter(~pl.col("virtualized"))["per_tok"])
    steal = float(df.filter(pl.col("layer") == "hypervisor")["steal_frac"].max() or 0.0)
    return {"present": cv_ratio > 1.8 and steal > 0.2, "cv_ratio": cv_ratio, "steal_max": steal}


def sig_migration_reconfiguration_risk(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    envs = r.group_by("env").agg(t=pl.col("t_s").min(), p99=pl.col("latency_ms").quantile(0.99)).sort("t")
    if envs.height != 2:
        return {"present": False, "envs": envs.height}
    p99_ratio = envs["p99"][1] / envs["p99"][0]
    failures = timeout_rate(r) + float((r["n_drop"] > 0).mean())
    ok = df.filter(pl.col("event") == "migrate").height > 0 and p99_ratio > 1.3 and failures < 0.005
    return {"present": ok, "p99_ratio": p99_ratio, "failures": failures}


def sig_batch_scheduling_conflict(df: pl.DataFrame) -> dict[str, object]:
    s = sched(df)
    jobs = s.filter((pl.col("event") == "arrive") & (pl.col("workload_class") == "batch")).select("request_id", ja="ts")
    waiting = s.filter(pl.col("event") == "dispatch").join(jobs, on="request_id").select("ja", jd="ts").sort("ja")
    if waiting.height == 0:
        return {"present": False, "jobs": 0}
    r = requests(df).sort("t_arrive").join_asof(waiting, left_on="t_arrive", right_on="ja")
    r = r.with_columns(behind=pl.col("t_arrive") < pl.col("jd").fill_null(pl.col("t_arrive")))
    behind = r.filter(pl.col("behind"))["queue_wait_ms"].mean() or 0.0
    clear = r.filter(~pl.col("behind"))["queue_wait_ms"].mean() or 0.0
    many = df.filter(pl.col("phase") == "batch_job").group_by("request_id").agg(pl.col("device").n_unique())["device"].min()
    ok = behind > 500 and behind > 3 * clear and many >= 2
    return {"present": ok, "behind_ms": behind, "clear_ms": clear, "devices_per_job": many}


def sig_burst_amplification(df: pl.DataFrame) -> dict[str, object]:
    q, r = depth(df), requests(df)
    backlog = max(run_lengths((q >= 50).to_list()), default=0)
    ok = q.max() > 100 and backlog > 12 and timeout_rate(r) > 0.02
    return {"present": ok, "peak": q.max(), "backlog_s": backlog, "timeouts": timeout_rate(r)}


def sig_slot_locking(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    low_share = decode_time_share(df, r, priority=2)
    p0_wait = float(r.filter(pl.col("priority") == 0)["queue_wait_ms"].quantile(0.9))
    return {"present": low_share > 0.6 and p0_wait > 100, "low_priority_slot_share": low_share, "p0_wait_p90_ms": p0_wait}


def sig_idle_overload_oscillation(df: pl.DataFrame) -> dict[str, object]:
    episodes = [n for n in run_lengths((depth(df) >= 20).to_list()) if n >= 2]
    idle = float((gpu_samples(df).filter(arrival_window(df))["gpu_util"] < 0.05).mean())
    return {"present": len(episodes) >= 4 and idle > 0.15, "overload_episodes": len(episodes), "idle_device_seconds": idle}


def sig_energy_latency_mismatch(df: pl.DataFrame) -> dict[str, object]:
    g = gpu_samples(df).filter(arrival_window(df))
    power_cv = float(g.group_by("device").agg(cv=pl.col("power_w").std() / pl.col("power_w").mean())["cv"].median())
    w = requests(df).filter(pl.col("completed")).group_by((pl.col("t_s") // 10).alias("w")).agg(pl.col("latency_ms").median())
    swing = float(w["latency_ms"].max() / w["latency_ms"].min())
    return {"present": power_cv < 0.02 and swing > 2.0, "power_cv": power_cv, "latency_swing": swing}


def sig_retry_amplification(df: pl.DataFrame) -> dict[str, object]:
    r = requests(df)
    retry_frac = float((r["n_retry"] > 0).mean())
    attempts = sched(df).filter(pl.col("event").is_in(["retry"]) | ((pl.col("event") == "arrive") & (pl.col("attempt") == 0))).height
    return {"present": retry_frac > 0.05 and attempts / r.height > 1.15, "retry_frac": retry_frac, "load_gain": attempts / r.height}


def sig_queue_wait_dominance(df: pl.DataFrame) -> dict[str, object]:
    out = df.filter(pl.col("event") == "complete").select("request_id", out="output_tokens")
    short = requests(df).filter(pl.col("completed")).join(out, on="request_id").filter(pl.col("out") <= 40)
    share = float((short["queue_wait_ms"] / short["latency_ms"]).median())
    return {"present": share > 0.4, "short_request_wait_share": share}


def sig_sla_degradation_without_shortage(df: pl.DataFrame) -> dict[str, object]:
    r, q = requests(df), depth(df)
    ok = r["met_slo"].mean() < 0.9 and q.mean() < 1 and q.max() < 10 and timeout_rate(r) < 0.005
    return {"present": ok, "slo": r["met_slo"].mean(), "qmean": q.mean(), "qmax": q.max()}


SIGNATURES: dict[str, Signature] = {
    f.__name__.removeprefix("sig_").replace("_", "-"): f
    for f in (
        sig_legitimate_queueing, sig_latency_asymmetry_drift, sig_virtualization_control_distortion,
        sig_migration_reconfiguration_risk, sig_batch_scheduling_conflict, sig_burst_amplification, sig_slot_locking,
        sig_idle_overload_oscillation, sig_energy_latency_mismatch, sig_retry_amplification, sig_queue_wait_dominance,
        sig_sla_degradation_without_shortage,
    )
}  # fmt: skip


def test_every_scenario_that_applies_on_a_unified_fleet_has_a_signature() -> None:
    unified = {n for n in SCENARIOS if refusal(n, Shape(fleet="colocated")) is None}
    assert set(SIGNATURES) == unified - {"healthy"}


@pytest.mark.parametrize("fleet", UNIFIED)
def test_healthy_unified_fleet_is_healthy(fleet: str) -> None:
    df = shaped("healthy", fleet)
    r = requests(df)
    assert r["met_slo"].mean() >= 0.98 and timeout_rate(r) == 0 and depth(df).max() <= 10


@pytest.mark.parametrize("fleet", UNIFIED)
@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_condition_present_on_unified_fleet_and_absent_from_its_healthy(name: str, fleet: str) -> None:
    present = SIGNATURES[name](shaped(name, fleet))
    assert present["present"], present
    quiet = SIGNATURES[name](shaped("healthy", fleet))
    assert not quiet["present"], quiet
