"""The request-path model on hand-written traces whose every number is known."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from coherence_diag import analyze

MS = 1_000_000
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _write(tmp_path, rows):
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col("ts").cast(pl.Int64))
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    return path


def _sched(rid, event, t_ms, **kw):
    return {"ts": T0 + int(t_ms * MS), "layer": "scheduler", "event": event, "request_id": rid, **kw}


def test_disaggregated_path_decomposes_latency(tmp_path):
    rows = [
        _sched("r1", "arrive", 0, attempt=0, slo_ms=100.0, prompt_tokens=500, workload_class="inference", priority=0),
        _sched("r1", "dispatch", 10, attempt=0, pool="prefill", device="g0", predicted_ms=20.0),
        {"ts": T0 + 10 * MS, "layer": "gpu", "event": "exec", "request_id": "r1", "device": "g0", "dur_ms": 20.0, "phase": "prefill"},
        {"ts": T0 + 30 * MS, "layer": "network", "event": "transfer", "request_id": "r1", "dur_ms": 5.0, "kind": "kv_transfer", "bytes": 1000},
        _sched("r1", "dispatch", 45, attempt=0, pool="decode", device="g1", predicted_ms=30.0),
        _sched("r1", "first_token", 47, attempt=0),
        {"ts": T0 + 45 * MS, "layer": "gpu", "event": "exec", "request_id": "r1", "device": "g1", "dur_ms": 40.0, "phase": "decode"},
        _sched("r1", "complete", 90, attempt=0, output_tokens=64),
        {"ts": T0, "layer": "gpu", "event": "device_info", "device": "g0", "host": "h0", "pool": "prefill", "accelerator": "H100-SXM", "virtualized": False},
        {"ts": T0, "layer": "gpu", "event": "device_info", "device": "g1", "host": "h1", "pool": "decode", "accelerator": "L40S", "virtualized": True},
        {"ts": T0 + 5 * MS, "layer": "hypervisor", "event": "sample", "host": "h0", "steal_frac": 0.25},
    ]
    req = analyze(_write(tmp_path, rows)).requests.row(0, named=True)
    assert req["outcome"] == "completed"
    assert req["latency_ms"] == 90.0
    assert req["queue_wait_ms"] == 10.0
    assert req["ttft_ms"] == 47.0
    assert req["prefill_exec_ms"] == 20.0 and req["decode_exec_ms"] == 40.0
    assert req["kv_transfer_ms"] == 5.0
    assert req["decode_queue_ms"] == 10.0  # decode dispatch at 45 after KV ready at 35
    assert (req["pool"], req["decode_pool"]) == ("prefill", "decode")
    assert (req["prefill_accelerator"], req["decode_accelerator"]) == ("H100-SXM", "L40S")
    assert req["predicted_ms"] == 50.0
    assert req["slo_met"] is True
    assert req["steal_frac_at_dispatch"] == 0.25  # as-of join: latest host sample before dispatch


@pytest.mark.parametrize("with_attempt_column", [True, False])
def test_retry_counts_attempts_and_splits_retry_delay_from_queue_wait(tmp_path, with_attempt_column):
    def a(n):
        return {"attempt": n} if with_attempt_column else {}

    rows = [
        _sched("r1", "arrive", 0, slo_ms=1000.0, **a(0)),
        _sched("r1", "timeout", 200, **a(0)),
        _sched("r1", "retry", 210, **a(1)),
        _sched("r1", "arrive", 210, **a(1)),
        _sched("r1", "dispatch", 250, pool="p", device="g0", **a(1)),
        _sched("r1", "complete", 300, **a(1)),
        _sched("r2", "arrive", 5, slo_ms=1000.0, **a(0)),
        _sched("r2", "timeout", 900, **a(0)),
        _sched("r3", "arrive", 6, slo_ms=1000.0, **a(0)),
        _sched("r3", "drop", 7, **a(0)),
        _sched("r4", "arrive", 8, slo_ms=1000.0, **a(0)),
    ]
    result = analyze(_write(tmp_path, rows))
    reqs = {r["request_id"]: r for r in result.requests.iter_rows(named=True)}
    assert reqs["r1"]["attempts"] == 2
    assert reqs["r1"]["retry_delay_ms"] == 210.0
    assert reqs["r1"]["queue_wait_ms"] == 40.0
    assert reqs["r1"]["latency_ms"] == 300.0
    assert [reqs[r]["outcome"] for r in ("r1", "r2", "r3", "r4")] == ["completed", "timeout", "dropped", "unfinished"]
    m = result.report.metrics
    assert m.timeout_rate == pytest.approx(1 / 3)  # unfinished requests are not in the denominator
    assert m.drop_rate == pytest.approx(1 / 3)
    assert m.requests.retried == 1 and m.requests.unfinished == 1


def test_time_series_windows(tmp_path):
    rows = []
    for i in range(10):
        t = i * 300  # ms
        rows += [
            _sched(f"r{i}", "arrive", t, pool="p"),
            _sched(f"r{i}", "dispatch", t + 10, pool="p", device="g0"),
            _sched(f"r{i}", "complete", t + 110, pool="p"),
        ]
        rows.append({"ts": T0 + int((t + 10) * MS), "layer": "gpu", "event": "exec", "request_id": f"r{i}", "device": "g0", "dur_ms": 100.0})
    # one long span crossing a window edge
    rows.append({"ts": T0 + 3500 * MS, "layer": "gpu", "event": "exec", "device": "g1", "dur_ms": 1000.0, "phase": "batch_job"})
    result = analyze(_write(tmp_path, rows), window_s=1.0)
    pools = result.series.pools
    assert pools["arrivals"].to_list() == [4, 3, 3]  # t = 0..900 | 1200..1800 | 2100..2700
    dev = {(r["device"], (r["window_start_ns"] - T0) // 10**9): r["busy_ms"] for r in result.series.devices.iter_rows(named=True)}
    assert dev[("g1", 3)] == pytest.approx(500.0) and dev[("g1", 4)] == pytest.approx(500.0)
    assert dev[("g0", 0)] == pytest.approx(390.0)  # the span at 910 ms runs 90 ms into window 0
    assert dev[("g0", 1)] == pytest.approx(310.0)  # 10 ms of it, then 1210, 1510 and 90 ms of 1810


def test_summed_durations_are_bit_identical_between_runs():
    """Float sums inside a parallel group-by depend on row arrival order; the path model sums
    integer nanoseconds, so the same trace gives the same bits every time."""
    sample = Path(__file__).resolve().parents[1] / "sample_traces" / "retry-amplification.parquet"
    cols = ["request_id", "exec_ms", "prefill_exec_ms", "decode_exec_ms", "predicted_ms", "kv_transfer_ms"]
    runs = [analyze(sample).requests.select(cols).with_columns(pl.col("request_id").cast(pl.String)).sort("request_id") for _ in range(3)]
    for other in runs[1:]:
        assert other.equals(runs[0])


def test_attributes_are_the_smallest_or_largest_value_on_any_row_of_the_request(tmp_path):
    # Values on dispatch rows and on the other rows are aggregated apart, then combined: the
    # result must be the min (max) over all the request's rows; names compare as text.
    rows = [
        _sched("r1", "arrive", 0, env="prod-b", priority=3, prompt_tokens=10, slo_ms=500.0),
        _sched("r1", "dispatch", 5, pool="p", device="g0", env="prod-a", priority=1, workload_class="inference"),
        _sched("r1", "complete", 50, env="prod-c", output_tokens=7, prompt_tokens=12),
        _sched("r2", "arrive", 1, pool="zz"),  # never dispatched: its pool is the smallest on its rows
        _sched("r2", "timeout", 900, pool="aa"),
        _sched("r3", "dispatch", 2, pool="q", device="g1", output_tokens=4),  # dispatch rows only
    ]
    reqs = {r["request_id"]: r for r in analyze(_write(tmp_path, rows)).requests.iter_rows(named=True)}
    r1 = reqs["r1"]
    assert (r1["env"], r1["priority"], r1["workload_class"]) == ("prod-a", 1, "inference")
    assert (r1["prompt_tokens"], r1["output_tokens"], r1["slo_ms"]) == (12, 7, 500.0)
    assert reqs["r2"]["pool"] == "aa" and reqs["r2"]["outcome"] == "timeout"
    assert reqs["r3"]["pool"] == "q" and reqs["r3"]["output_tokens"] == 4 and reqs["r3"]["arrive_ns"] is None


@pytest.mark.parametrize("decode_first", [False, True])
def test_two_dispatches_at_one_instant_give_the_same_path_in_either_row_order(tmp_path, decode_first):
    """Which tied dispatch is the prefill's does not depend on the rows' order (or chunking): the
    smallest pool and device name is the first dispatch's, the largest the last's."""
    dispatches = [
        _sched("r1", "dispatch", 5, pool="prefill", device="g0"),
        _sched("r1", "dispatch", 5, pool="decode", device="g1"),
    ]
    rows = [_sched("r1", "arrive", 0), *(dispatches[::-1] if decode_first else dispatches), _sched("r1", "complete", 50)]
    r1 = analyze(_write(tmp_path, rows)).requests.row(0, named=True)
    assert (r1["pool"], r1["decode_pool"], r1["prefill_device"], r1["decode_device"]) == ("decode", "prefill", "g0", "g1")


def test_an_attribute_with_one_value_on_every_row_is_that_value_for_every_request(tmp_path):
    rows = [
        _sched(rid, event, t, env="onprem", priority=2)
        for rid, base in (("r1", 0), ("r2", 10))
        for event, t in (("arrive", base), ("dispatch", base + 1), ("complete", base + 5))
    ]
    requests = analyze(_write(tmp_path, rows)).requests
    assert requests["env"].cast(pl.String).to_list() == ["onprem", "onprem"]
    assert requests["priority"].to_list() == [2, 2]


@pytest.mark.parametrize("time_ordered", [True, False])
def test_two_dispatches_at_one_instant_name_the_smallest_device_first_in_any_row_order(tmp_path, time_ordered):
    # The tie check (paths._ties) compares only neighbours when the dispatches are in time order
    # and every dispatch otherwise: either way a tie picks by name, not by the rows' order.
    def request(rid, t_ms, first, second):
        return [
            _sched(rid, "arrive", t_ms, attempt=0),
            _sched(rid, "dispatch", t_ms + 1, attempt=0, pool="p", device=first),
            _sched(rid, "dispatch", t_ms + 1, attempt=0, pool="p", device=second),
            _sched(rid, "complete", t_ms + 9, attempt=0),
        ]

    rows = request("r1", 0, "g1", "g0") + request("r2", 20, "g0", "g1") + request("r3", 40, "g2", "g1")
    if not time_ordered:
        rows = rows[::-1]
    requests = analyze(_write(tmp_path, rows)).requests.sort("request_id")
    assert requests["prefill_device"].cast(pl.String).to_list() == ["g0", "g0", "g1"]
    assert requests["decode_device"].cast(pl.String).to_list() == ["g1", "g1", "g2"]
