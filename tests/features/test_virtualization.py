"""Virtualization features on hand-built traces whose distortion is known."""

from __future__ import annotations

import numpy as np
import pytest

from coherence_diag import features
from tests.features._build import MS, T0, compute, context, device_info, exec_span, sched

DEVICES = [("g0", "h0"), ("g1", "h1"), ("g2", "h2"), ("g3", "hv")]  # g3 runs behind a hypervisor


def _rows(*, coupled: bool, vm_from_s: float = 0.0, hyp_device_column: bool = False, n: int = 800):
    rng = np.random.default_rng(7)
    rows = [device_info(d, h, "dec") for d, h in DEVICES]
    steal = np.clip(0.05 + 0.4 * (np.sin(np.arange(400) / 7.0) > 0.3) + 0.02 * rng.standard_normal(400), 0, 1)
    for s in range(400):
        if s >= vm_from_s:
            row = {"ts": T0 + s * 1000 * MS, "layer": "hypervisor", "event": "sample", "host": "hv",
                   "steal_frac": float(steal[s]), "cotenant_util": float(min(1.0, steal[s] * 1.5))}
            if hyp_device_column:
                row["device"] = "g3"
            rows.append(row)
    for i in range(n):
        t_ms = i * 400.0 + float(rng.uniform(0, 50))
        device, _host = DEVICES[i % 4]
        on_vm = device == "g3" and t_ms / 1000 >= vm_from_s
        factor = float(np.exp(0.05 * rng.standard_normal()))
        if on_vm:
            s = int(t_ms // 1000)
            factor *= (1.0 + 3.0 * steal[s]) if coupled else float(np.exp(0.6 * rng.standard_normal()))
        rid = f"r{i}"
        rows += [
            sched(rid, "arrive", t_ms, priority=1, slo_ms=10_000.0, prompt_tokens=100, workload_class="inference"),
            sched(rid, "dispatch", t_ms, device=device, pool="dec", predicted_ms=100.0),
            exec_span(rid, device, t_ms, 100.0 * factor, "decode"),
            sched(rid, "complete", t_ms + 100.0 * factor + 1, output_tokens=10),
        ]
    return rows


NAMES = ("virt_dispersion_ratio", "virt_coupling_rho", "virt_steal_coupling_rho", "virt_coupling_p",
         "virt_span_share", "virt_slowdown_ratio")


@pytest.mark.parametrize("hyp_device_column", [False, True])
def test_coupled_distortion_is_measured(tmp_path, hyp_device_column):
    v = compute(context(tmp_path, _rows(coupled=True, hyp_device_column=hyp_device_column)), *NAMES)
    assert v["virt_span_share"] == pytest.approx(0.25)
    assert v["virt_dispersion_ratio"] > 5  # bare metal spreads ~exp(+-0.064), the VM by steal
    assert v["virt_steal_coupling_rho"] > 0.8
    assert v["virt_coupling_rho"] >= v["virt_steal_coupling_rho"]
    assert v["virt_coupling_p"] < 1e-6
    assert v["virt_slowdown_ratio"] > 1.2


def test_uncoupled_noise_has_dispersion_but_no_coupling(tmp_path):
    v = compute(context(tmp_path, _rows(coupled=False)), *NAMES)
    assert v["virt_dispersion_ratio"] > 3
    assert abs(v["virt_coupling_rho"]) < 0.25


def test_a_host_that_becomes_a_vm_midway_counts_as_bare_metal_before(tmp_path):
    v = compute(context(tmp_path, _rows(coupled=True, vm_from_s=160.0)), *NAMES)
    # g3 has a quarter of the spans; it is virtualized for the last half of the trace (160 s of 320 s).
    assert v["virt_span_share"] == pytest.approx(0.125, abs=0.01)


def test_no_hypervisor_layer_means_no_virtualized_work(tmp_path):
    rows = [r for r in _rows(coupled=True) if r["layer"] != "hypervisor"]
    v = compute(context(tmp_path, rows), *NAMES)
    assert v["virt_span_share"] == 0.0
    assert v["virt_dispersion_ratio"] is None and v["virt_coupling_rho"] is None


def test_work_on_a_migrated_host_is_not_compared_with_the_old_environment(tmp_path):
    rows = _rows(coupled=True, vm_from_s=160.0)
    rows.append({"ts": T0 + 160_000 * MS, "layer": "hypervisor", "event": "migrate", "host": "hv", "env": "cloud"})
    v = compute(context(tmp_path, rows), *NAMES)
    # g3's spans after the move ran in `cloud`, where no bare-metal device serves the pool.
    assert v["virt_span_share"] == pytest.approx(0.125, abs=0.01)
    assert v["virt_dispersion_ratio"] is None
    assert v["virt_coupling_rho"] > 0.8  # the coupling itself is still measured


def test_the_same_device_is_slower_while_its_host_is_contended(tmp_path):
    # Steal alternates between ~0.05 (calm) and ~0.45 (contended); the VM's service is x(1 + 3 steal):
    # about 1.15 calm and 2.35 contended, so the within-device stretch is about 2.35 / 1.15.
    v = compute(context(tmp_path, _rows(coupled=True)), "virt_contention_stretch_ratio")
    assert v["virt_contention_stretch_ratio"] == pytest.approx(2.35 / 1.15, rel=0.1)


def test_contention_that_does_not_reach_execution_shows_no_stretch(tmp_path):
    v = compute(context(tmp_path, _rows(coupled=False)), "virt_contention_stretch_ratio")
    assert 0.8 < v["virt_contention_stretch_ratio"] < 1.25


def test_the_contention_stretch_needs_hypervisor_readings(tmp_path):
    rows = [r for r in _rows(coupled=True) if r["layer"] != "hypervisor"]
    rows = [{**r, "virtualized": True} if r.get("event") == "device_info" and r["device"] == "g3" else r for r in rows]
    ctx = context(tmp_path, rows)
    result = features.compute(ctx, {"virt_contention_stretch_ratio", "virt_slowdown_ratio"})
    assert result.values["virt_slowdown_ratio"] is not None  # the flagged device is compared with bare metal
    assert result.values["virt_contention_stretch_ratio"] is None
    assert result.missing["virt_contention_stretch_ratio"] == ("steal_frac",)


def _slo_rows(vm_miss_every: int) -> list[dict]:
    """Four devices of one pool and class, g3 flagged virtualized, no hypervisor layer; requests take
    100 ms against a 1 s SLO except every `vm_miss_every`-th request on g3, which takes 2 s."""
    rows = [device_info(d, h, "dec", virtualized=(d == "g3")) for d, h in DEVICES]
    for i in range(800):
        device = DEVICES[i % 4][0]
        slow = device == "g3" and (i // 4) % vm_miss_every == 0
        dur = 2000.0 if slow else 100.0
        rid = f"r{i}"
        rows += [
            sched(rid, "arrive", i * 400.0, priority=1, slo_ms=1000.0, prompt_tokens=100, workload_class="inference"),
            sched(rid, "dispatch", i * 400.0, device=device, pool="dec", predicted_ms=100.0),
            exec_span(rid, device, i * 400.0, dur, "decode"),
            sched(rid, "complete", i * 400.0 + dur + 1, output_tokens=10),
        ]
    return rows


SLO_NAMES = ("virt_slo_miss_ratio", "virt_slo_miss_excess_frac", "virt_slo_miss_p")


def test_slo_misses_concentrated_on_virtualized_devices_without_hypervisor_samples(tmp_path):
    v = compute(context(tmp_path, _slo_rows(vm_miss_every=5)), *SLO_NAMES)
    # g3 served 200 requests, 40 missed; bare metal 600, none: expected 200 x 0.5 / 601.
    assert v["virt_slo_miss_ratio"] == pytest.approx(40 / (200 * 0.5 / 601))
    assert v["virt_slo_miss_excess_frac"] == pytest.approx(0.2)
    assert v["virt_slo_miss_p"] < 1e-12


def test_no_virtualized_device_leaves_the_slo_comparison_undefined(tmp_path):
    rows = [{**r, "virtualized": False} if r.get("event") == "device_info" else r for r in _slo_rows(vm_miss_every=5)]
    result = features.compute(context(tmp_path, rows), set(SLO_NAMES))
    assert result.values["virt_slo_miss_ratio"] is None
    assert "virtualized" in result.reasons["virt_slo_miss_ratio"]


# --- the swing of service over time, without the hypervisor layer ------------------------------

SWING_DEVICES = [("v0", "vh0"), ("v1", "vh1"), ("v2", "vh2"), ("b0", "h0"), ("b1", "h1"), ("b2", "h2")]


def _swing_rows(vm_factor, vms: int = 3) -> list[dict]:
    """Six devices of one pool and class, the first `vms` flagged virtualized, no hypervisor layer;
    a request every 100 ms in turn on each device for 300 s (~16 spans per device and 10-s
    window). Service is 100 ms x lognormal noise (sigma 0.05), times `vm_factor(device index, t_s)`
    on the virtualized devices."""
    rng = np.random.default_rng(3)
    rows = [device_info(d, h, "dec", virtualized=(k < vms)) for k, (d, h) in enumerate(SWING_DEVICES)]
    for i in range(3000):
        t_ms = i * 100.0
        k = i % len(SWING_DEVICES)
        device = SWING_DEVICES[k][0]
        dur = 100.0 * float(np.exp(0.05 * rng.standard_normal()))
        if k < vms:
            dur *= vm_factor(k, t_ms / 1000)
        rid = f"r{i}"
        rows += [
            sched(rid, "arrive", t_ms, priority=1, slo_ms=10_000.0, prompt_tokens=100, workload_class="inference"),
            sched(rid, "dispatch", t_ms, device=device, pool="dec", predicted_ms=100.0),
            exec_span(rid, device, t_ms, dur, "decode"),
            sched(rid, "complete", t_ms + dur + 1, output_tokens=10),
        ]
    return rows


def _episodes(k: int, t_s: float) -> float:
    """Co-tenant episodes: 20 s of double service every 60 s, each host at its own phase."""
    return 2.0 if (t_s + 17 * k) % 60 < 20 else 1.0


def test_intermittent_contention_swings_the_guests_service_over_time(tmp_path):
    v = compute(context(tmp_path, _swing_rows(_episodes)), "virt_stretch_swing_ratio", "virt_slowdown_ratio", "virt_coupling_rho")
    assert v["virt_coupling_rho"] is None  # no hypervisor readings at all
    # Window medians of the guests jump by log 2 between episodes; bare metal's barely move.
    assert v["virt_stretch_swing_ratio"] > 10
    # A third of the time at double service: the mean rises by a third, the median barely.
    assert 1.0 < v["virt_slowdown_ratio"] < 1.1


def test_a_calm_overhead_shifts_the_guests_service_but_does_not_swing_it(tmp_path):
    v = compute(context(tmp_path, _swing_rows(lambda _k, _t: 1.15)), "virt_stretch_swing_ratio", "virt_slowdown_ratio")
    assert v["virt_slowdown_ratio"] == pytest.approx(1.15, rel=0.02)
    assert 0.5 < v["virt_stretch_swing_ratio"] < 1.5


def test_the_swing_needs_three_devices_on_each_side(tmp_path):
    result = features.compute(context(tmp_path, _swing_rows(_episodes, vms=2)), {"virt_stretch_swing_ratio"})
    assert result.values["virt_stretch_swing_ratio"] is None
    assert "3 virtualized and 3 bare-metal devices" in result.reasons["virt_stretch_swing_ratio"]
