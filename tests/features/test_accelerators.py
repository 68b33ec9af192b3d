"""Accelerator-runtime features (coherence_diag/features/accelerators.py) on hand-built traces
whose every number is known."""

from __future__ import annotations

import pytest

from coherence_diag import features
from tests.features._ctx import context

MS = 1_000_000
S = 1_000 * MS
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

DRIFT = [
    "drift_class_growth_ratio",
    "drift_class_relative_growth_ratio",
    "drift_class_late_growth_ratio",
    "drift_class_accumulated_frac",
    "drift_class_rank_corr",
    "drift_class_divergence_ratio",
]
MEMORY = [
    "mempath_sm_active_busy_frac",
    "mempath_mem_bw_busy_frac",
    "mempath_memory_compute_gap_frac",
    "mempath_kv_saturated_frac",
    "mempath_decode_inflation_ratio",
    "mempath_preempted_frac",
]


def _features(tmp_path, rows, names):
    return features.compute(context(tmp_path, rows), set(names))


def _device_info(device, accelerator, pool):
    return {"ts": T0, "layer": "gpu", "event": "device_info", "device": device, "accelerator": accelerator, "pool": pool}


def _request(rid, t_ns, device, predicted_ms, realized_ms, pool):
    return [
        {"ts": t_ns, "layer": "scheduler", "event": "arrive", "request_id": rid, "pool": pool, "workload_class": "inference"},
        {"ts": t_ns, "layer": "scheduler", "event": "dispatch", "request_id": rid, "pool": pool, "device": device,
         "predicted_ms": predicted_ms},
        {"ts": t_ns, "layer": "gpu", "event": "exec", "request_id": rid, "device": device, "dur_ms": realized_ms,
         "phase": "decode"},
        {"ts": t_ns + int(realized_ms * MS), "layer": "scheduler", "event": "complete", "request_id": rid, "pool": pool},
    ]


def _two_classes(slowdown_a, slowdown_b):
    """300 requests, one per second, alternating between a device of class X and one of class Y,
    each predicted at 100 ms; realized = 100 ms x slowdown(k) for request k."""
    rows = [_device_info("gA", "X", "pa"), _device_info("gB", "Y", "pb")]
    for k in range(300):
        dev, pool, slow = ("gA", "pa", slowdown_a) if k % 2 == 0 else ("gB", "pb", slowdown_b)
        rows += _request(f"r{k}", T0 + k * S, dev, 100.0, 100.0 * slow(k), pool)
    return rows


def test_drift_of_one_class_is_measured_against_the_others(tmp_path):
    # Class X slows linearly from 1x to 2x over the trace, class Y stays on the model. With spans at
    # 0..299 s the thirds are requests 0-99, 100-199, 200-299; X serves the even ones, so its
    # ratio-of-sums per third is 1 + mean(k)/300 with mean(k) = 49, 149, 249.
    values = _features(tmp_path, _two_classes(lambda k: 1 + k / 300, lambda k: 1.0), DRIFT).values
    early, middle, late = 1 + 49 / 300, 1 + 149 / 300, 1 + 249 / 300
    assert values["drift_class_growth_ratio"] == pytest.approx(late / early)
    assert values["drift_class_relative_growth_ratio"] == pytest.approx(late / early)  # Y's growth is 1
    assert values["drift_class_late_growth_ratio"] == pytest.approx(late / middle)
    assert values["drift_class_accumulated_frac"] == pytest.approx((late - early) / (late - 1))
    assert values["drift_class_divergence_ratio"] == pytest.approx(late)
    assert values["drift_class_rank_corr"] == pytest.approx(1.0)


def test_a_step_common_to_every_class_is_not_class_drift(tmp_path):
    # Both classes become 1.5x slower half-way (a fleet-wide step, e.g. a migration).
    step = lambda k: 1.5 if k >= 150 else 1.0  # noqa: E731
    values = _features(tmp_path, _two_classes(step, step), DRIFT).values
    assert values["drift_class_growth_ratio"] == pytest.approx(1.5)
    assert values["drift_class_relative_growth_ratio"] == pytest.approx(1.0)


def test_a_constant_inflation_accumulates_nothing(tmp_path):
    # X runs 1.8x over the model from the first request on, with a slight rise (no drift from the model).
    values = _features(tmp_path, _two_classes(lambda k: 1.8 + k / 3000, lambda k: 1.0), DRIFT).values
    assert values["drift_class_accumulated_frac"] < 0.1


def test_drift_needs_two_comparable_classes(tmp_path):
    rows = [_device_info("gA", "X", "pa")]
    for k in range(300):
        rows += _request(f"r{k}", T0 + k * S, "gA", 100.0, 100.0 * (1 + k / 300), "pa")
    result = _features(tmp_path, rows, DRIFT)
    assert all(result.values[n] is None for n in DRIFT)


def _sample(t_s, device, gpu_util, sm, mem, kv):
    return {"ts": T0 + t_s * S, "layer": "gpu", "event": "sample", "device": device, "gpu_util": gpu_util,
            "sm_active": sm, "mem_bw_util": mem, "kv_cache_util": kv}


def test_memory_path_reads_busy_windows_of_decode_devices_only(tmp_path):
    rows = [_device_info("gD", "X", "pd"), _device_info("gP", "Y", "pp")]
    for k in range(40):  # 40 decode requests on gD, predicted 100 ms, realized 150 ms; every 4th preempted once
        rows += _request(f"r{k}", T0 + k * S, "gD", 100.0, 150.0, "pd")
        if k % 4 == 0:
            rows.append({"ts": T0 + k * S + 10 * MS, "layer": "scheduler", "event": "preempt", "request_id": f"r{k}", "device": "gD"})
    rows.append({"ts": T0, "layer": "gpu", "event": "exec", "request_id": "p0", "device": "gP", "dur_ms": 5.0, "phase": "prefill"})
    for t in range(40):
        # decode device: busy windows alternate between a full and a half-full KV cache
        rows.append(_sample(t, "gD", 1.0, 0.3, 0.9, 0.95 if t % 2 else 0.5))
        rows.append(_sample(t, "gD", 0.1, 0.05, 0.05, 0.99))  # idle window: not counted
        rows.append(_sample(t, "gP", 1.0, 0.9, 0.3, 0.0))  # prefill device: not counted
    values = _features(tmp_path, rows, MEMORY).values
    assert values["mempath_sm_active_busy_frac"] == pytest.approx(0.3)
    assert values["mempath_mem_bw_busy_frac"] == pytest.approx(0.9)
    assert values["mempath_memory_compute_gap_frac"] == pytest.approx(0.6)
    assert values["mempath_kv_saturated_frac"] == pytest.approx(0.5)
    assert values["mempath_preempted_frac"] == pytest.approx(10 / 40)
    assert values["mempath_decode_inflation_ratio"] == pytest.approx(1.5)  # from the 30 requests never preempted
