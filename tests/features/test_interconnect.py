"""Interconnect features (coherence_diag/features/interconnect.py) on hand-built traces."""

from __future__ import annotations

import polars as pl
import pytest

from coherence_diag import features
from coherence_diag.features.interconnect import _busy_ns
from tests.features._ctx import context

MS = 1_000_000
S = 1_000 * MS
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

NAMES = [
    "interconnect_link_saturated_frac",
    "interconnect_link_util_mean_frac",
    "interconnect_transfer_share_frac",
    "interconnect_path_slowdown_ratio",
    "interconnect_bound_device_busy_ratio",
    "interconnect_bound_device_throughput_ratio",
    "interconnect_bound_device_share_frac",
    "interconnect_bound_pool_wait_frac",
]


def _features(tmp_path, rows):
    return features.compute(context(tmp_path, rows), set(NAMES))


def _trace(uplink_util: float):
    """Prefill devices p0, p1 (NICs nic0, nic1) from the start and p2 from 100 s behind `up`; decode d0.

    400 requests, one every 0.5 s. Before 100 s they alternate p0/p1; after, p2 takes one in five and
    p0/p1 two each. KV transfers take 5 ms over a NIC and 900 ms over the uplink; every second
    request waits 10 ms for its prefill dispatch.
    """
    rows = [
        {"ts": T0, "layer": "gpu", "event": "device_info", "device": "p0", "pool": "pf", "accelerator": "H"},
        {"ts": T0, "layer": "gpu", "event": "device_info", "device": "p1", "pool": "pf", "accelerator": "H"},
        {"ts": T0 + 100 * S, "layer": "gpu", "event": "device_info", "device": "p2", "pool": "pf", "accelerator": "H"},
        {"ts": T0, "layer": "gpu", "event": "device_info", "device": "d0", "pool": "dc", "accelerator": "L"},
    ]
    link = {"p0": "nic0", "p1": "nic1", "p2": "up"}
    for j in range(400):
        t = T0 + j * S // 2
        if t < T0 + 100 * S:
            dev = ("p0", "p1")[j % 2]
        else:
            dev = ("p0", "p1", "p2", "p0", "p1")[j % 5]
        rid = f"r{j}"
        wait = 10 * MS if j % 2 else 0
        xfer = 900.0 if dev == "p2" else 5.0
        t_pre = t + wait
        t_x = t_pre + 100 * MS
        t_dec = t_x + int(xfer * MS)
        rows += [
            {"ts": t, "layer": "scheduler", "event": "arrive", "request_id": rid, "pool": "pf", "workload_class": "inference"},
            {"ts": t_pre, "layer": "scheduler", "event": "dispatch", "request_id": rid, "pool": "pf", "device": dev, "predicted_ms": 100.0},
            {"ts": t_pre, "layer": "gpu", "event": "exec", "request_id": rid, "device": dev, "dur_ms": 100.0, "phase": "prefill"},
            {"ts": t_x, "layer": "network", "event": "transfer", "request_id": rid, "src_device": dev, "dst_device": "d0",
             "dur_ms": xfer, "bytes": 1_000_000_000, "kind": "kv_transfer", "link": link[dev]},
            {"ts": t_dec, "layer": "scheduler", "event": "dispatch", "request_id": rid, "pool": "dc", "device": "d0", "predicted_ms": 100.0},
            {"ts": t_dec, "layer": "gpu", "event": "exec", "request_id": rid, "device": "d0", "dur_ms": 100.0, "phase": "decode"},
            {"ts": t_dec + 100 * MS, "layer": "scheduler", "event": "complete", "request_id": rid, "pool": "dc"},
        ]
    for s in range(200):
        for name in ("nic0", "nic1"):
            rows.append({"ts": T0 + s * S, "layer": "network", "event": "sample", "link": name, "link_util": 0.1})
        if s >= 100:
            rows.append({"ts": T0 + s * S, "layer": "network", "event": "sample", "link": "up", "link_util": uplink_util})
    return rows


def test_devices_behind_a_saturated_link_against_their_peers(tmp_path):
    result = _features(tmp_path, _trace(uplink_util=0.95))
    v = result.values
    assert v["interconnect_link_saturated_frac"] == pytest.approx(1.0)
    assert v["interconnect_link_util_mean_frac"] == pytest.approx(0.95)
    assert v["interconnect_transfer_share_frac"] == pytest.approx(900 / 1100, abs=0.01)  # 100 + 900 + 100 ms
    assert v["interconnect_path_slowdown_ratio"] == pytest.approx(900 / 5)
    # After p2 came online it served 40 requests, p0 and p1 80 each: half as busy, half the throughput.
    assert v["interconnect_bound_device_busy_ratio"] == pytest.approx(0.5, abs=0.02)
    assert v["interconnect_bound_device_throughput_ratio"] == pytest.approx(0.5)
    assert v["interconnect_bound_device_share_frac"] == pytest.approx(1 / 3)
    assert v["interconnect_bound_pool_wait_frac"] == pytest.approx(0.5)
    detail = result.details["interconnect_link_saturated_frac"]
    assert detail["link"] == "up" and detail["devices_behind_link"] == ["p2"]  # d0 also receives over the NICs


def test_an_unsaturated_link_cuts_nothing_off(tmp_path):
    v = _features(tmp_path, _trace(uplink_util=0.5)).values
    assert v["interconnect_link_saturated_frac"] == 0.0
    assert v["interconnect_bound_device_busy_ratio"] is None


def test_busy_time_is_the_union_of_spans_clipped_to_the_period():
    spans = pl.LazyFrame(
        {
            "device": pl.Series(["a", "a", "a", "b"], dtype=pl.Categorical),
            "behind": [True, True, True, False],
            "ts": [0, 5 * MS, 20 * MS, 0],
            "dur_ms": [10.0, 10.0, 10.0, 100.0],
        }
    )
    busy = _busy_ns(spans, 0, 50 * MS)
    assert busy[True] == 25 * MS  # [0, 15) and [20, 30)
    assert busy[False] == 50 * MS  # [0, 100) clipped at the end of the period


HANDOFF = ["interconnect_handoff_share_frac", "interconnect_handoff_excess_ratio"]


@pytest.mark.parametrize("network_layer", [True, False], ids=["with-network-layer", "request-paths-only"])
def test_handoff_reads_the_cut_off_path_with_or_without_the_network_layer(tmp_path, network_layer):
    rows = _trace(uplink_util=0.95)
    if not network_layer:
        rows = [r for r in rows if r["layer"] != "network"]
    result = features.compute(context(tmp_path, rows), set(HANDOFF))
    v = result.values
    # p2's requests hand off in 900 ms (prefill end -> decode dispatch) of 1100-1110 ms; the others' in 5 ms,
    # the median of every 10-s bin of the decode pool.
    assert 900 / 1110 <= v["interconnect_handoff_share_frac"] <= 900 / 1100
    assert v["interconnect_handoff_excess_ratio"] == pytest.approx(901 / 6, rel=1e-3)
    assert result.details["interconnect_handoff_excess_ratio"]["source"] == "p2"  # no host: the device


def test_handoffs_as_fast_as_the_peers_show_no_excess(tmp_path):
    rows = [r for r in _trace(uplink_util=0.5) if r["layer"] != "network"]
    rows = [  # every path as fast as the NICs: p2's decode starts 5 ms after its prefill too
        {**r, "ts": r["ts"] - 895 * MS}
        if r.get("device") == "d0" and r["event"] in ("dispatch", "exec") and _prefill_on(rows, r["request_id"]) == "p2"
        else r
        for r in rows
    ]
    v = features.compute(context(tmp_path, rows), set(HANDOFF)).values
    assert v["interconnect_handoff_excess_ratio"] == pytest.approx(1.0)
    assert v["interconnect_handoff_share_frac"] < 0.05


def _prefill_on(rows, rid):
    return next(r["device"] for r in rows if r.get("request_id") == rid and r.get("phase") == "prefill")


def test_handoff_needs_two_prefill_sources(tmp_path):
    rows = [r for r in _trace(uplink_util=0.95) if r["layer"] != "network" and r.get("device") not in ("p1", "p2")]
    rows = [r for r in rows if r.get("request_id") is None or _prefill_on_or_none(rows, r["request_id"]) == "p0"]
    result = features.compute(context(tmp_path, rows), set(HANDOFF))
    assert result.values["interconnect_handoff_excess_ratio"] is None
    assert "two prefill hosts" in result.reasons["interconnect_handoff_excess_ratio"]


def _prefill_on_or_none(rows, rid):
    return next((r["device"] for r in rows if r.get("request_id") == rid and r.get("phase") == "prefill"), None)


def test_handoff_from_exec_spans_when_the_scheduler_logs_no_decode_dispatch(tmp_path):
    rows = [
        r for r in _trace(uplink_util=0.95)
        if r["layer"] != "network" and not (r["event"] == "dispatch" and r.get("pool") == "dc")
    ]
    v = features.compute(context(tmp_path, rows), set(HANDOFF)).values
    assert 900 / 1110 <= v["interconnect_handoff_share_frac"] <= 900 / 1100
    assert v["interconnect_handoff_excess_ratio"] == pytest.approx(901 / 6, rel=1e-3)
