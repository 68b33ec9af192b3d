"""Batch co-residency and slot-locking features on hand-built traces."""

from __future__ import annotations

import pytest

from tests.features._build import compute, context, device_info, exec_span, sched

BATCH_NAMES = ("batch_coresident_frac", "batch_coresident_wait_ratio", "batch_coresident_wait_p",
               "batch_excess_wait_share", "batch_pool_occupancy_frac")


def _batch_rows(*, batch_pool: str) -> list[dict]:
    rows = [device_info("p0", "h0", "pre"), device_info("b0", "hb", "iso")]
    device = "p0" if batch_pool == "pre" else "b0"
    # One batch job holds its device from 10 s to 20 s.
    rows += [
        sched("job", "arrive", 10_000, workload_class="batch", priority=3),
        sched("job", "dispatch", 10_000, device=device, pool=batch_pool, predicted_ms=10_000.0),
        exec_span("job", device, 10_000, 10_000, "batch_job"),
        sched("job", "complete", 20_000),
    ]
    for i in range(80):  # an inference request every 500 ms on pool `pre`
        t = i * 500.0
        blocked = batch_pool == "pre" and 10_000 <= t < 20_000
        start = 20_000.0 if blocked else t + 2.0 + (i % 3)
        rid = f"r{i}"
        rows += [
            sched(rid, "arrive", t, workload_class="inference", priority=0, slo_ms=5_000.0, prompt_tokens=100),
            sched(rid, "dispatch", start, device="p0", pool="pre", predicted_ms=50.0),
            exec_span(rid, "p0", start, 50.0, "prefill"),
            sched(rid, "complete", start + 50.0, output_tokens=1),
        ]
    return rows


def test_inference_waiting_behind_batch_in_its_own_pool(tmp_path):
    v = compute(context(tmp_path, _batch_rows(batch_pool="pre")), *BATCH_NAMES)
    assert v["batch_coresident_frac"] == pytest.approx(20 / 80)
    assert v["batch_coresident_wait_ratio"] > 100
    assert v["batch_coresident_wait_p"] < 1e-6
    assert v["batch_excess_wait_share"] > 0.95  # nearly all queue wait is spent behind the job
    assert v["batch_pool_occupancy_frac"] == pytest.approx(10 / 40, abs=0.01)


def test_batch_on_an_isolated_pool_costs_inference_nothing(tmp_path):
    v = compute(context(tmp_path, _batch_rows(batch_pool="iso")), *BATCH_NAMES)
    assert v["batch_coresident_frac"] == 0.0
    assert v["batch_excess_wait_share"] == 0.0
    assert v["batch_pool_occupancy_frac"] == 0.0
    assert v["batch_coresident_wait_ratio"] is None


SLOT_NAMES = ("hp_slot_wait_share", "hp_wait_behind_lowprio_share", "hp_wait_lowprio_occupancy_frac",
              "lowprio_slot_share", "lowprio_slot_hold_ratio", "hp_wait_protection_ratio", "priority_wait_rho")


def _request(rid, priority, t, decode_device, decode_start, decode_ms):
    prefill_end = t + 100.0
    return [
        sched(rid, "arrive", t, priority=priority, workload_class="inference", slo_ms=600_000.0, prompt_tokens=100),
        sched(rid, "dispatch", t, device="p0", pool="pre", predicted_ms=100.0),
        exec_span(rid, "p0", t, 100.0, "prefill"),
        sched(rid, "dispatch", decode_start, device=decode_device, pool="dec", predicted_ms=decode_ms),
        exec_span(rid, decode_device, decode_start, decode_ms, "decode"),
        sched(rid, "complete", decode_start + decode_ms, output_tokens=10),
    ] if decode_start >= prefill_end else []


def test_long_low_priority_tasks_hold_the_slots_high_priority_waits_for(tmp_path):
    rows = [device_info("p0", "h0", "pre"), device_info("d0", "h1", "dec"), device_info("d1", "h2", "dec")]
    for k in range(4):  # four long low-priority generations fill d0 from 0.1 s to 60 s
        rows += _request(f"long{k}", 2, 0.0, "d0", 100.0, 59_900.0)
    for k, t in enumerate((10_000.0, 20_000.0, 30_000.0)):  # priority 0 waits for d0 until 60 s
        rows += _request(f"hp{k}", 0, t, "d0", 60_000.0, 1_000.0)
    for k in range(6):  # priority 1 on d1, no waiting
        rows += _request(f"mid{k}", 1, 5_000.0 * k, "d1", 5_000.0 * k + 100.0, 1_000.0)
    v = compute(context(tmp_path, rows), *SLOT_NAMES)
    waits = [60_000.0 - t - 100.0 for t in (10_000.0, 20_000.0, 30_000.0)]
    latencies = [61_000.0 - t for t in (10_000.0, 20_000.0, 30_000.0)]
    assert v["hp_slot_wait_share"] == pytest.approx(sum(waits) / sum(latencies))
    assert v["hp_wait_lowprio_occupancy_frac"] == pytest.approx(1.0)  # every running slot was a long task
    assert v["hp_wait_behind_lowprio_share"] == pytest.approx(sum(waits) / sum(latencies))
    assert v["lowprio_slot_share"] == pytest.approx(4 * 59_900 / (4 * 59_900 + 9 * 1_000))
    assert v["lowprio_slot_hold_ratio"] == pytest.approx(59_900 / 1_000)
    assert v["hp_wait_protection_ratio"] is None  # priority 1 never waited: no finite ratio


def test_no_high_priority_wait_means_nothing_held_it(tmp_path):
    rows = [device_info("p0", "h0", "pre"), device_info("d0", "h1", "dec")]
    for k in range(3):
        rows += _request(f"hp{k}", 0, 1_000.0 * k, "d0", 1_000.0 * k + 100.0, 500.0)
        rows += _request(f"lo{k}", 2, 1_000.0 * k, "d0", 1_000.0 * k + 100.0, 500.0)
    v = compute(context(tmp_path, rows), *SLOT_NAMES)
    assert v["hp_slot_wait_share"] == 0.0
    assert v["hp_wait_behind_lowprio_share"] == 0.0
    assert v["hp_wait_lowprio_occupancy_frac"] is None
    assert v["lowprio_slot_hold_ratio"] == pytest.approx(1.0)


def test_the_middle_class_waiting_behind_the_holders_counts_when_the_top_class_passes(tmp_path):
    rows = [device_info("p0", "h0", "pre"), device_info("d0", "h1", "dec"), device_info("d1", "h2", "dec")]
    for k in range(4):  # four long low-priority generations fill d0 from 0.1 s to 60 s
        rows += _request(f"long{k}", 2, 0.0, "d0", 100.0, 59_900.0)
    for k in range(6):  # priority 0 on d1, never waits
        rows += _request(f"hp{k}", 0, 5_000.0 * k, "d1", 5_000.0 * k + 100.0, 1_000.0)
    for k, t in enumerate((10_000.0, 20_000.0, 30_000.0)):  # priority 1 waits for d0 until 60 s
        rows += _request(f"mid{k}", 1, t, "d0", 60_000.0, 1_000.0)
    v = compute(context(tmp_path, rows), "hp_wait_behind_lowprio_share", "above_lowprio_wait_behind_share")
    assert v["hp_wait_behind_lowprio_share"] == 0.0
    waits = [60_000.0 - t - 100.0 for t in (10_000.0, 20_000.0, 30_000.0)]
    latencies = [61_000.0 - t for t in (10_000.0, 20_000.0, 30_000.0)] + [1_100.0] * 6
    assert v["above_lowprio_wait_behind_share"] == pytest.approx(sum(waits) / sum(latencies))
