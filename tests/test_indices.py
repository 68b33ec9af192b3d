"""Index properties: bounds, invariances, and that each index moves the way its definition says."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import analyze
from coherence_diag.indices import SETTLE_S
from coherence_diag.render.json_report import report_to_dict
from coherence_diag.simulate import SCENARIOS
from tests.rules.harness import analyzed
from tests.tracegen import TraceSpec, make_trace, write

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
specs = st.builds(
    TraceSpec,
    n_requests=st.integers(20, 120),
    seed=st.integers(0, 10_000),
    rate_per_s=st.floats(5.0, 80.0),
    timeout_frac=st.floats(0.0, 0.2),
    retry_frac=st.floats(0.0, 0.3),
    slo_ms=st.one_of(st.none(), st.floats(100.0, 1500.0)),
    network=st.booleans(),
)


def _indices(frame: pl.DataFrame, tmp) -> dict:
    path = tmp / f"t{np.random.default_rng().integers(1 << 30)}.parquet"
    write(frame, path)
    i = analyze(path).report.indices
    return {"CI": i.CI, "DI": i.DI, "WPI": i.WPI, "HCL": i.HCL}


def _same(a: dict, b: dict) -> None:
    for k in a:
        assert (a[k] is None) == (b[k] is None), k
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k


@SETTINGS
@given(spec=specs)
def test_indices_are_bounded(tmp_path_factory, spec):
    values = _indices(make_trace(spec), tmp_path_factory.mktemp("b"))
    for name, value in values.items():
        assert value is None or 0.0 <= value <= 1.0, (name, value)


@SETTINGS
@given(spec=specs, perm=st.integers(0, 2**31), shift_s=st.integers(-10**8, 10**8))
def test_invariant_under_row_order_time_shift_and_relabelling(tmp_path_factory, spec, perm, shift_s):
    tmp = tmp_path_factory.mktemp("inv")
    frame = make_trace(spec)
    base = _indices(frame, tmp)
    _same(base, _indices(frame[np.random.default_rng(perm).permutation(frame.height)], tmp))
    shift = pl.duration(seconds=shift_s, microseconds=123, time_unit="ns")  # ns: keep every instant exact
    _same(base, _indices(frame.with_columns(pl.col("ts") + shift), tmp))
    relabel = {
        c: pl.when(pl.col(c).is_not_null()).then(pl.lit("x-") + pl.col(c).hash(7).cast(pl.String)).otherwise(None)
        for c in ("request_id", "device", "host", "pool", "src_device", "dst_device", "link", "queue")
        if c in frame.columns
    }
    _same(base, _indices(frame.with_columns(**relabel), tmp))


def _delay_after_arrival(frame: pl.DataFrame, every: int, delay_ms: float) -> pl.DataFrame:
    """Postpone everything that happens to every n-th request after its arrival."""
    ids = frame.filter(pl.col("event") == "arrive")["request_id"].unique().sort()[::every]
    later = pl.col("request_id").is_in(ids.implode()) & ~((pl.col("layer") == "scheduler") & (pl.col("event") == "arrive"))
    delay = pl.duration(microseconds=int(delay_ms * 1000), time_unit="ns")
    return frame.with_columns(pl.when(later).then(pl.col("ts") + delay).otherwise(pl.col("ts")).alias("ts"))


@SETTINGS
@given(spec=specs, every=st.integers(1, 4), delay_ms=st.floats(50.0, 2000.0))
def test_di_rises_when_queue_delay_is_injected(tmp_path_factory, spec, every, delay_ms):
    tmp = tmp_path_factory.mktemp("di")
    frame = make_trace(spec)
    before = _indices(frame, tmp)["DI"]
    after = _indices(_delay_after_arrival(frame, every, delay_ms), tmp)["DI"]
    assert before is not None and after is not None
    assert after > before


@SETTINGS
@given(seed=st.integers(0, 10_000), tighter=st.floats(0.1, 0.4))
def test_hcl_rises_when_effective_work_falls_at_equal_nominal_utilization(tmp_path_factory, seed, tighter):
    tmp = tmp_path_factory.mktemp("hcl")
    frame = make_trace(TraceSpec(n_requests=150, seed=seed, slo_ms=1000.0))
    strict = frame.with_columns(pl.col("slo_ms") * tighter)  # same devices, same busy time, fewer SLOs met
    a = analyze_path(frame, tmp)
    b = analyze_path(strict, tmp)
    assert a.metrics.nominal_utilization == pytest.approx(b.metrics.nominal_utilization)
    assert b.metrics.effective_utilization < a.metrics.effective_utilization
    assert b.indices.HCL > a.indices.HCL


def analyze_path(frame, tmp):
    path = tmp / f"h{np.random.default_rng().integers(1 << 30)}.parquet"
    write(frame, path)
    return analyze(path).report


def _wave_trace(tmp, *, cascade: bool, spike_ms: float, spike_s: int, lag_s: int, growth: float) -> float:
    """Two pools, a steady trickle, and one wait spike in pool A; in the cascade the spike moves
    on to pool B `lag_s` after it began, `growth` times larger and longer, and outlives A's spike
    by more than the settling time (a wave, not a disturbance absorbed within seconds)."""
    ms = 1_000_000
    t0 = 1_767_225_600_000_000_000
    rows = []
    follow_from = 20 + lag_s
    follow_to = max(20 + lag_s + int(spike_s * growth), 20 + spike_s + int(SETTLE_S) + 2)
    for i in range(700):
        second = i // 10
        for pool in ("a", "b"):
            arrive = t0 + i * 100 * ms
            wait = 5.0
            if pool == "a" and 20 <= second < 20 + spike_s:
                wait = spike_ms
            if cascade and pool == "b" and follow_from <= second < follow_to:
                wait = spike_ms * growth
            rid = f"{pool}{i}"
            rows += [
                {"ts": arrive, "layer": "scheduler", "event": "arrive", "request_id": rid, "pool": pool, "slo_ms": 9000.0},
                {"ts": arrive + int(wait * ms), "layer": "scheduler", "event": "dispatch", "request_id": rid, "pool": pool, "device": f"d{pool}"},
                {"ts": arrive + int((wait + 50) * ms), "layer": "scheduler", "event": "complete", "request_id": rid},
            ]
    path = tmp / f"{'cascade' if cascade else 'local'}-{np.random.default_rng().integers(1 << 30)}.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return analyze(path).report.indices.WPI


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spike_ms=st.floats(400.0, 3000.0),
    spike_s=st.integers(2, 6),
    lag_s=st.integers(1, 4),
    growth=st.floats(1.0, 2.0),
)
def test_wpi_is_higher_for_a_propagating_cascade_than_for_a_local_spike(tmp_path_factory, spike_ms, spike_s, lag_s, growth):
    tmp = tmp_path_factory.mktemp("wpi")
    local = _wave_trace(tmp, cascade=False, spike_ms=spike_ms, spike_s=spike_s, lag_s=lag_s, growth=growth)
    cascade = _wave_trace(tmp, cascade=True, spike_ms=spike_ms, spike_s=spike_s, lag_s=lag_s, growth=growth)
    assert local == 0.0  # a local spike with no follower does not propagate
    assert cascade is not None and cascade > local
    # It reaches pool B's wait and latency (2 of the 6 other series: arrivals, A's and B's wait,
    # latency and SLO misses), larger and longer: amplified, so the full weight of that spread.
    assert cascade >= 2 / 6 - 1e-9


def test_wpi_is_null_with_one_layer_of_timing(tmp_path):
    """Arrivals alone are one stress series: nothing can propagate anywhere."""
    frame = make_trace(TraceSpec(n_requests=50, seed=1)).filter((pl.col("layer") == "scheduler") & (pl.col("event") == "arrive"))
    path = tmp_path / "arrivals.parquet"
    write(frame, path)
    report = analyze(path).report
    assert report.indices.WPI is None
    assert report.evaluability["WPI"].evaluated is False


def test_wpi_is_defined_on_one_colocated_pool(tmp_path):
    """The most common fleet: one pool. Arrivals, queue wait and latency are three series."""
    frame = make_trace(TraceSpec(n_requests=50, seed=1)).filter(pl.col("layer") == "scheduler")
    frame = frame.with_columns(pl.lit("only").alias("pool"))
    path = tmp_path / "one.parquet"
    write(frame, path)
    report = analyze(path).report
    assert report.indices.WPI is not None and 0.0 <= report.indices.WPI <= 1.0


DEGRADED = [name for name, sc in SCENARIOS.items() if sc.kind != "baseline"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ci_of_healthy_exceeds_every_degraded_scenario(seed):
    healthy = analyzed("healthy", seed, 180.0).report.indices.CI
    assert healthy is not None
    worse = {name: analyzed(name, seed, 180.0).report.indices.CI for name in DEGRADED}
    offenders = {k: v for k, v in worse.items() if v is None or v >= healthy}
    assert not offenders, (healthy, offenders)


# --- per-window timeline (index_breakdown.timeline) --------------------------------------------

TIMELINE_VALUES = ("CI", "DI", "HCL", "wave_extent")


def _timeline(frame: pl.DataFrame, tmp) -> list[dict]:
    path = tmp / f"tl{np.random.default_rng().integers(1 << 30)}.parquet"
    write(frame, path)
    return list(analyze(path).report.index_breakdown.timeline)


@SETTINGS
@given(spec=specs, busy_fallback=st.booleans())
def test_timeline_values_are_bounded_or_null(tmp_path_factory, spec, busy_fallback):
    frame = make_trace(spec)
    if busy_fallback:  # nominal utilization from exec busy time instead of gpu_util samples
        frame = frame.drop("gpu_util")
    timeline = _timeline(frame, tmp_path_factory.mktemp("tl"))
    assert timeline
    starts = [w["window_start"] for w in timeline]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for window in timeline:
        assert set(window) == {"window_start", *TIMELINE_VALUES}
        for name in TIMELINE_VALUES:
            value = window[name]
            assert value is None or 0.0 <= value <= 1.0, (name, window)
        if spec.slo_ms is None:
            assert window["HCL"] is None  # its inputs (useful work needs an SLO) are missing


def _idle_busy_spans(frame: pl.DataFrame, second: int) -> pl.DataFrame:
    """Exec spans that keep every device busy for 0.8 s of one window and serve no request."""
    first_arrival = frame.filter(pl.col("event") == "arrive")["ts"].min()
    start = first_arrival + timedelta(seconds=second, milliseconds=50)
    spans = pl.DataFrame({"device": ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]}).select(
        pl.lit(start, pl.Datetime("ns", "UTC")).alias("ts"), pl.lit("gpu").alias("layer"), pl.lit("exec").alias("event"), "device",
        pl.lit(800.0).alias("dur_ms"), pl.lit("other").alias("phase"),
    )
    return pl.concat([frame, spans], how="diagonal_relaxed")


@SETTINGS
@given(seed=st.integers(0, 10_000), second=st.integers(1, 4))
def test_window_with_idle_but_busy_time_has_higher_hcl(tmp_path_factory, seed, second):
    tmp = tmp_path_factory.mktemp("hclw")
    frame = make_trace(TraceSpec(n_requests=150, seed=seed, rate_per_s=20.0, slo_ms=1000.0))
    before = _timeline(frame, tmp)
    after = _timeline(_idle_busy_spans(frame, second), tmp)
    assert [w["window_start"] for w in before] == [w["window_start"] for w in after]
    hit = before[second]["window_start"]
    for b, a in zip(before, after):
        if b["window_start"] == hit:
            assert a["HCL"] is not None and (b["HCL"] is None or a["HCL"] > b["HCL"]), (b, a)
            if b["CI"] is not None:
                assert a["CI"] < b["CI"]  # less useful compute: a less coherent window
        else:
            _close(a["HCL"], b["HCL"])  # spans count in the window where they start


@SETTINGS
@given(spec=specs, perm=st.integers(0, 2**31))
def test_timeline_is_deterministic_and_invariant_under_row_order(tmp_path_factory, spec, perm):
    tmp = tmp_path_factory.mktemp("tlo")
    frame = make_trace(spec)
    path = tmp / "same.parquet"
    write(frame, path)
    first = analyze(path).report.index_breakdown.timeline
    assert analyze(path).report.index_breakdown.timeline == first  # same input, same timeline
    shuffled = _timeline(frame[np.random.default_rng(perm).permutation(frame.height)], tmp)
    assert [w["window_start"] for w in shuffled] == [w["window_start"] for w in first]
    for a, b in zip(first, shuffled):
        for name in TIMELINE_VALUES:
            _close(a[name], b[name], name)


def _close(a: float | None, b: float | None, what: str = "") -> None:
    assert (a is None) == (b is None), what
    if a is not None:
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), what


def test_per_pool_hcl_puts_a_device_listed_in_two_pools_in_its_earliest_one(tmp_path_factory):
    # g0's device_info names pool "a" first and pool "b" later: its time counts in "a", the same
    # way whatever the order of the rows in the file.
    tmp = tmp_path_factory.mktemp("pools")
    frame = make_trace(TraceSpec(n_requests=60, seed=4, slo_ms=400.0))
    infos = frame.filter(pl.col("event") == "device_info")
    device = infos["device"][0]
    relisted = infos.filter(pl.col("device") == device).with_columns(
        (pl.col("ts") + timedelta(seconds=1)).cast(frame.schema["ts"]), pl.lit("zz-other-pool").alias("pool")
    )
    both = pl.concat([frame, relisted])
    pools = []
    for order in (both, both.reverse()):
        path = tmp / f"t{len(pools)}.parquet"
        write(order, path)
        pools.append(report_to_dict(analyze(path).report)["index_breakdown"]["pools"])  # as reported (6 decimals)
    assert pools[0] == pools[1]
    assert "zz-other-pool" not in pools[0] or pools[0]["zz-other-pool"]["HCL"] is None


# --- an index in its bad range is never left to silence -----------------------------------------


def test_a_bad_index_without_a_finding_gets_an_explicit_line():
    from coherence_diag.indices import unexplained
    from coherence_diag.model import Evaluability, Finding, IndexBreakdown, Indices

    breakdown = IndexBreakdown(layers={"scheduler": 0.9, "serving": 0.2}, links={"end_to_end": 0.05, "compute_network": None})
    evaluability = {"slot-locking": Evaluability(False, ("dur_ms",), "needs columns"), "CI": Evaluability(True)}
    notes = unexplained(Indices(CI=0.05, DI=0.1, WPI=0.5, HCL=None), breakdown, [], evaluability)
    assert [n.index for n in notes] == ["CI", "WPI"]
    ci = notes[0]
    assert ci.weakest_components == ("links.end_to_end 0.05", "layers.serving 0.20", "layers.scheduler 0.90")
    assert ci.not_evaluable_rules == ("slot-locking",)
    assert ci.message.startswith("CI 0.05 is in its bad range (< 0.65) and no rule explains it")
    medium = Finding("burst-amplification", "pattern", None, "AI.27", (), "medium", 0.4, "s", {})
    assert unexplained(Indices(CI=0.05), breakdown, [medium], evaluability) == ()
    low = Finding("burst-amplification", "pattern", None, "AI.27", (), "low", 0.1, "s", {})
    assert [n.index for n in unexplained(Indices(CI=0.05), breakdown, [low], evaluability)] == ["CI"]
