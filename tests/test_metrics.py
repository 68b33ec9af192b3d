"""Metrics agree with an independent computation from the raw rows (plain Python + numpy)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from coherence_diag import analyze
from tests.tracegen import TraceSpec, make_trace, write


def _independent(frame: pl.DataFrame) -> dict:
    rows = frame.with_columns(pl.col("ts").dt.epoch("ns")).to_dicts()
    by_req: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["layer"] == "scheduler":
            by_req[r["request_id"]].append(r)
    latency, ttft, wait, outcome, slo_met, klass = {}, {}, {}, {}, {}, {}
    for rid, evs in by_req.items():
        evs.sort(key=lambda r: r["ts"])
        arrive = next(r for r in evs if r["event"] == "arrive")
        klass[rid] = arrive.get("workload_class") or "inference"
        final_attempt = max(r["attempt"] for r in evs)
        start = min(r["ts"] for r in evs if r["event"] in ("arrive", "retry") and r["attempt"] == final_attempt)
        dispatches = [r["ts"] for r in evs if r["event"] == "dispatch" and r["attempt"] == final_attempt]
        if dispatches:
            wait[rid] = (min(dispatches) - start) / 1e6
        ft = [r["ts"] for r in evs if r["event"] == "first_token"]
        if ft:
            ttft[rid] = (min(ft) - arrive["ts"]) / 1e6
        done = [r["ts"] for r in evs if r["event"] == "complete"]
        if done:
            outcome[rid] = "completed"
            latency[rid] = (max(done) - arrive["ts"]) / 1e6
        elif any(r["event"] == "timeout" for r in evs):
            outcome[rid] = "timeout"
        elif any(r["event"] == "drop" for r in evs):
            outcome[rid] = "dropped"
        slo = arrive.get("slo_ms")
        slo_met[rid] = slo is not None and rid in latency and latency[rid] <= slo
    inference = [rid for rid in by_req if klass[rid] != "batch"]
    finished = [rid for rid in inference if rid in outcome]
    samples = defaultdict(list)
    for r in rows:
        if r["layer"] == "gpu" and r["event"] == "sample":
            samples[r["device"]].append(r["gpu_util"])
    nominal = float(np.mean([np.mean(v) for v in samples.values()]))
    exec_total = exec_useful = 0.0
    for r in rows:
        if r["layer"] == "gpu" and r["event"] == "exec":
            exec_total += r["dur_ms"]
            rid = r["request_id"]
            useful = slo_met.get(rid, False) if klass.get(rid, "inference") != "batch" else outcome.get(rid) == "completed"
            exec_useful += r["dur_ms"] if useful else 0.0
    sched_ts = [r["ts"] for r in rows if r["layer"] == "scheduler"]
    seconds = (max(sched_ts) - min(sched_ts)) / 1e9
    q = lambda xs: [float(np.percentile(xs, p)) for p in (50, 95, 99)]  # noqa: E731
    return {
        "latency": q([latency[r] for r in inference if r in latency]),
        "ttft": q([ttft[r] for r in inference if r in ttft]),
        "wait": q([wait[r] for r in inference if r in wait]),
        "timeout_rate": sum(outcome[r] == "timeout" for r in finished) / len(finished),
        "drop_rate": sum(outcome[r] == "dropped" for r in finished) / len(finished),
        "slo_attainment": sum(slo_met[r] for r in finished) / len(finished),
        "goodput_rps": sum(slo_met[r] for r in finished) / seconds,
        "nominal": nominal,
        "effective": nominal * exec_useful / exec_total,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_independent_computation(tmp_path, seed):
    frame = make_trace(TraceSpec(n_requests=200, seed=seed, retry_frac=0.1))
    path = tmp_path / "t.parquet"
    write(frame, path)
    m = analyze(path).report.metrics
    want = _independent(frame)
    approx = lambda x: pytest.approx(x, rel=1e-9, abs=1e-9)  # noqa: E731
    assert [m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99] == approx(want["latency"])
    assert [m.ttft_ms.p50, m.ttft_ms.p95, m.ttft_ms.p99] == approx(want["ttft"])
    assert [m.queue_wait_ms.p50, m.queue_wait_ms.p95, m.queue_wait_ms.p99] == approx(want["wait"])
    assert m.timeout_rate == approx(want["timeout_rate"])
    assert m.drop_rate == approx(want["drop_rate"])
    assert m.slo_attainment == approx(want["slo_attainment"])
    assert m.goodput_rps == approx(want["goodput_rps"])
    assert m.nominal_utilization == approx(want["nominal"])
    assert m.effective_utilization == approx(want["effective"])
    assert m.effective_utilization <= m.nominal_utilization


def test_nominal_utilization_from_busy_time_when_no_samples(tmp_path):
    frame = make_trace(TraceSpec(n_requests=80, seed=4, batch_jobs=0)).filter(pl.col("event") != "sample")
    path = tmp_path / "t.parquet"
    write(frame, path)
    result = analyze(path)
    m = result.report.metrics
    assert m.nominal_utilization_source == "exec_busy_time"
    # Independent: union of each device's spans over (devices x observed span).
    spans = frame.filter(pl.col("event") == "exec").with_columns(pl.col("ts").dt.epoch("ns"))
    busy_ns = 0
    for _, dev in spans.group_by("device"):
        intervals = sorted((s, s + int(d * 1e6)) for s, d in zip(dev["ts"], dev["dur_ms"]))
        cur_s, cur_e = intervals[0]
        for s, e in intervals[1:]:
            if s > cur_e:
                busy_ns += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        busy_ns += cur_e - cur_s
    n_devices = frame.filter(pl.col("event") == "device_info")["device"].n_unique()
    seconds = result.report.trace.duration_s
    assert m.nominal_utilization == pytest.approx(busy_ns / 1e9 / (n_devices * seconds), rel=1e-6)


def test_without_slo_the_slo_metrics_are_null_and_explained(tmp_path):
    frame = make_trace(TraceSpec(n_requests=50, seed=5, slo_ms=None))
    path = tmp_path / "t.parquet"
    write(frame, path)
    report = analyze(path).report
    assert report.metrics.slo_attainment is None
    assert report.metrics.goodput_rps is None
    assert report.metrics.effective_utilization is None
    assert report.evaluability["metrics.effective_utilization"].missing == ("slo_ms",)
    assert report.metrics.latency_ms.p99 is not None


def test_batch_jobs_do_not_enter_latency_percentiles(tmp_path):
    frame = make_trace(TraceSpec(n_requests=60, seed=6, batch_jobs=0))
    with_batch = make_trace(TraceSpec(n_requests=60, seed=6, batch_jobs=5))
    write(frame, tmp_path / "a.parquet")
    write(with_batch.filter(pl.col("layer") == "scheduler"), tmp_path / "b.parquet")
    a = analyze(tmp_path / "a.parquet").report
    b = analyze(tmp_path / "b.parquet").report
    assert b.metrics.requests.batch == 5
    assert a.metrics.latency_ms == b.metrics.latency_ms
