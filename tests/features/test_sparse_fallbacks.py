"""Features that stay measurable on sparse telemetry, and say which estimate they used.

Each fallback is checked against a trace whose truth is known by construction: a service time
that is an exact line in the tokens, device holds of known length, a dispatcher on a known tick,
a queue that only the scheduler rows show, demand that alternates between two known levels.
"""

from __future__ import annotations

import numpy as np
import pytest

from coherence_diag import features
from coherence_diag.features.service_model import PREDICTED_ESTIMATE
from tests.features._ctx import context, gpu_exec, sched


def _served(rid: str, t_s: float, prompt: int, output: int, device: str, wait_s: float = 0.0, **kw) -> list[dict]:
    """One request with prefill 10 + 0.5 * prompt ms and decode 3 * output ms on one device."""
    prefill, decode = 10.0 + 0.5 * prompt, 3.0 * output
    start = t_s + wait_s
    return [
        sched(rid, "arrive", t_s, prompt_tokens=prompt, pool="p", **kw),
        sched(rid, "dispatch", start, device=device, pool="p"),
        gpu_exec(rid, device, start, prefill, "prefill"),
        gpu_exec(rid, device, start + prefill / 1000, decode, "decode"),
        sched(rid, "complete", start + (prefill + decode) / 1000, output_tokens=output),
    ]


def test_expected_service_is_estimated_from_tokens_without_a_scheduler_prediction(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(80):
        rows += _served(f"r{i}", i * 0.5, int(rng.integers(100, 2000)), int(rng.integers(5, 300)), f"g{i % 4}")
    ctx = context(tmp_path, rows)
    assert ctx.derived == {"predicted_ms": PREDICTED_ESTIMATE}
    assert "predicted_ms" in ctx.columns
    done = ctx.requests.filter(ctx.requests["predicted_ms"].is_not_null())
    assert done.height == 80
    # The work is an exact line in the tokens: the estimate recovers each request's service.
    expected = 10.0 + 0.5 * done["prompt_tokens"].to_numpy() + 3.0 * done["output_tokens"].to_numpy()
    assert done["predicted_ms"].to_numpy() == pytest.approx(expected, rel=1e-6)
    dispatch = ctx.layers["scheduler"].filter(ctx.layers["scheduler"]["event"] == "dispatch")
    assert dispatch["predicted_ms"].null_count() == 0


def test_a_scheduler_prediction_is_used_as_it_is(tmp_path):
    rows = []
    for i in range(40):
        rows += _served(f"r{i}", i * 0.5, 500, 50, "g0")
    for row in rows:
        if row.get("event") == "dispatch":
            row["predicted_ms"] = 123.0
    ctx = context(tmp_path, rows)
    assert ctx.derived == {}
    assert set(ctx.requests["predicted_ms"].drop_nulls().to_list()) == {123.0}


def test_device_holds_by_non_inference_work_are_measured(tmp_path):
    rows = []
    for i in range(120):
        rows += _served(f"r{i}", i * 0.5, 400, 40, f"g{i % 4}")
    # An external batch system takes g3 for two minutes, twice: exec spans without a request.
    for k in range(2):
        rows.append({**gpu_exec("x", "g3", 1.0 + k * 2.0, 120_000.0, "batch_job"), "request_id": None})
    ctx = context(tmp_path, rows)
    v = features.compute(ctx, {"hold_duration_p50_ms", "hold_latency_ratio", "hold_device_frac"}).values
    assert v["hold_duration_p50_ms"] == pytest.approx(120_000.0)
    latency_p50 = float(ctx.completed["latency_ms"].median())
    assert v["hold_latency_ratio"] == pytest.approx(120_000.0 / latency_p50)
    assert 0.3 < v["hold_device_frac"] <= 1.0  # 240 s of holds over 4 devices x ~60 s, capped


def test_no_device_holds_reads_zero(tmp_path):
    rows = []
    for i in range(40):
        rows += _served(f"r{i}", i * 0.5, 400, 40, "g0")
    got = features.compute(context(tmp_path, rows), {"hold_latency_ratio", "hold_device_frac", "hold_duration_p50_ms"})
    assert got.values["hold_latency_ratio"] == 0.0 and got.values["hold_device_frac"] == 0.0
    assert got.values["hold_duration_p50_ms"] is None and "fewer than 2" in got.reasons["hold_duration_p50_ms"]


@pytest.mark.parametrize("tick", [True, False])
def test_dispatch_pacing_tells_a_timer_from_a_work_conserving_dispatcher(tmp_path, tick):
    rng = np.random.default_rng(2)
    rows = []
    for i, t in enumerate(np.sort(rng.uniform(0, 60, 300))):
        wait = (np.ceil(t / 2.0) * 2.0 - t) if tick else 0.0  # a 2-s tick releases everything waiting
        rows += _served(f"r{i}", float(t), 300, 20, f"g{i % 8}", wait_s=float(wait))
    v = features.compute(context(tmp_path, rows), {"dispatch_group_excess_ratio", "dispatch_tick_ms"}).values
    if tick:
        assert v["dispatch_group_excess_ratio"] > 5 and v["dispatch_tick_ms"] == pytest.approx(2000, abs=1)
    else:
        assert v["dispatch_group_excess_ratio"] < 1.5


def test_burst_backlog_is_read_from_the_scheduler_without_queue_samples(tmp_path):
    """No queue layer: the queue is rebuilt from arrivals and dispatches, and the evidence says so."""
    rows, i = [], 0
    for second in range(120):
        burst = 60 <= second < 63
        # The 3-s spike leaves a backlog that drains over the next 12 s.
        wait = (second - 59) * 2.0 if burst else (max(0.0, 6.0 - (second - 63) * 0.5) if second >= 63 else 0.0)
        n = 12 if burst else 2
        for k in range(n):
            rows += _served(f"r{i}", second + k / n, 200, 10, "g0", wait_s=wait)
            i += 1
    ctx = context(tmp_path, rows)
    got = features.compute(ctx, {"burst_episodes", "burst_backlog_ratio", "burst_wait_amplification"})
    assert got.missing == {}
    assert got.values["burst_episodes"] >= 1
    assert got.values["burst_backlog_ratio"] is not None and got.values["burst_backlog_ratio"] > 1
    assert got.details["burst_backlog_ratio"]["queue_depth_source"].startswith("reconstructed from the scheduler")


def test_idle_overload_phases_are_read_from_fleet_arrivals_and_waits(tmp_path):
    """No queue samples per pool: demand alternating between near-idle and overload (requests
    queue) is still seen, from the requests alone."""
    rows, i = [], 0
    for cycle in range(5):
        for second in range(20):
            t0 = cycle * 20 + second
            high = second >= 10
            n = 10 if high else 1
            for k in range(n):
                rows += _served(f"r{i}", t0 + k / n, 200, 10, f"g{i % 4}", wait_s=0.4 if high else 0.0)
                i += 1
    got = features.compute(context(tmp_path, rows), {"oscillation_cycles", "oscillation_idle_frac", "oscillation_overload_frac"})
    assert got.values["oscillation_cycles"] >= 3
    assert got.values["oscillation_idle_frac"] >= 0.3 and got.values["oscillation_overload_frac"] >= 0.3
    assert got.details["oscillation_cycles"]["estimate"].startswith("fleet arrivals and queue waits")
