"""Energy features: power flat or following the work, latency swing, on hand-built traces."""

from __future__ import annotations

import pytest

from coherence_diag import features
from tests.features._ctx import context, gpu_exec, gpu_sample, sched

NAMES = {"power_cv_median", "power_activity_cv_ratio", "power_activity_rank_corr", "slowdown_window_swing_ratio",
         "power_latency_rank_corr"}


def _rows(pinned: bool) -> list[dict]:
    rows = []
    for s in range(60):
        heavy = (s // 10) % 2 == 1  # 10 s light, 10 s heavy, ...
        busy_ms = 900.0 if heavy else 200.0
        slow = 3.0 if heavy else 1.0
        for k in range(4):
            rid = f"r{s}-{k}"
            t = s + 0.2 * k
            rows += [
                sched(rid, "arrive", t, slo_ms=5000.0),
                sched(rid, "dispatch", t, pool="p", device="g0", predicted_ms=100.0),
                sched(rid, "complete", t + 0.1 * slow),
            ]
        rows.append(gpu_exec(f"x{s}", "g0", s, busy_ms))
        power = 595.0 + (s % 3) if pinned else (150.0 + 500.0 * busy_ms / 1000.0 + (s % 3))
        rows.append(gpu_sample("g0", s + 0.5, power_w=power, gpu_util=busy_ms / 1000.0))
    return rows


def test_pinned_power_with_swinging_latency(tmp_path):
    v = features.compute(context(tmp_path, _rows(pinned=True)), NAMES).values
    assert v["power_cv_median"] < 0.01
    assert v["power_activity_cv_ratio"] < 0.05
    assert v["slowdown_window_swing_ratio"] == pytest.approx(3.0)  # latency / predicted: 1.0 vs 3.0
    assert abs(v["power_latency_rank_corr"]) < 0.5


def test_power_that_follows_work_is_coupled(tmp_path):
    v = features.compute(context(tmp_path, _rows(pinned=False)), NAMES).values
    assert v["power_cv_median"] > 0.2
    assert v["power_activity_cv_ratio"] > 0.3
    assert v["power_activity_rank_corr"] > 0.8
    assert v["power_latency_rank_corr"] > 0.5


def test_no_power_column_is_not_computed(tmp_path):
    rows = [r for r in _rows(pinned=True) if r["event"] != "sample"]
    fv = features.compute(context(tmp_path, rows), NAMES)
    assert fv.values["power_cv_median"] is None
    assert fv.missing["power_cv_median"] == ("power_w",)
