"""SLO misses with and without a visible capacity shortage on their path."""

from __future__ import annotations

import pytest

from coherence_diag import features
from tests.features._ctx import context, gpu_exec, queue_sample, sched

NAMES = {"slo_miss_explained_frac", "slo_unexplained_miss_rate", "slo_miss_wait_share", "fleet_busy_p95",
         "slo_miss_time_concentration"}


def _request(rid, t, wait, exec_ms, total, device="g0"):
    """Arrive at t, dispatch after `wait` s, execute exec_ms on device, complete `total` s after arrival."""
    return [
        sched(rid, "arrive", t, slo_ms=1000.0),
        sched(rid, "dispatch", t + wait, pool="p", device=device),
        gpu_exec(rid, device, t + wait, exec_ms),
        sched(rid, "complete", t + total),
    ]


def test_misses_are_explained_by_waiting_not_by_a_busy_device(tmp_path):
    """A shortage shows as waiting (or a transfer over a saturated link); a device busy the whole
    window with the request's own execution is no shortage the request met."""
    rows = []
    for i in range(40):  # met: 0.3 s each, on g0/g1 at low load
        rows += _request(f"ok{i}", 0.5 * i, 0.0, 100.0, 0.3, device=f"g{i % 2}")
    rows += _request("wait", 3.0, 0.6, 100.0, 1.5)  # missed: waited 0.6 of 1.5 s
    rows += _request("stall1", 7.1, 0.0, 100.0, 2.0)  # missed: no wait, device idle: unexplained
    rows += _request("stall2", 12.1, 0.0, 100.0, 2.0, device="g1")
    rows += _request("busy", 15.0, 0.0, 990.0, 2.0, device="g2")  # missed on a busy device, no wait: unexplained
    rows += [queue_sample("q", "p", s, 0) for s in range(22)]
    v = features.compute(context(tmp_path, rows), NAMES).values
    assert v["slo_miss_explained_frac"] == pytest.approx(1 / 4)
    assert v["slo_unexplained_miss_rate"] == pytest.approx(3 / 44)
    assert v["slo_miss_wait_share"] == pytest.approx(0.6 / 7.5)


def test_no_misses_means_nothing_unexplained(tmp_path):
    rows = []
    for i in range(30):
        rows += _request(f"ok{i}", 0.5 * i, 0.0, 100.0, 0.3)
    v = features.compute(context(tmp_path, rows), NAMES).values
    assert v["slo_unexplained_miss_rate"] == 0.0
    assert v["slo_miss_explained_frac"] is None
    assert v["fleet_busy_p95"] == pytest.approx(0.2, abs=0.01)  # 2 x 100 ms per 1 s window on one device
