"""Structural variants (`Shape`): each knob level changes the trace the way it claims.

All runs are short (60-240 s of arrivals at the default, small fleet size).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coherence_diag.errors import InputError
from coherence_diag.simulate import SCENARIOS, Shape, Telemetry, simulate
from coherence_diag.simulate.shape import BATCH_PLACEMENTS, CLIENTS, DISPATCHES, FLEETS, TELEMETRY_PARTS
from coherence_diag.simulate.variants import LAYER_ONLY_COLUMNS, TICK, refusal

from .sim_metrics import device_info, requests, sched, trace_violations

END = pl.col("ts") + pl.duration(microseconds=(pl.col("dur_ms") * 1e3).cast(pl.Int64))


def run(name: str, seed: int = 3, duration_s: float = 120, **knobs: object) -> pl.DataFrame:
    return simulate(name, seed, duration_s=duration_s, shape=Shape(**knobs))  # type: ignore[arg-type]


def execs(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("event") == "exec")


# --- a Shape left at the scenario's own levels changes nothing ---------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_empty_shape_is_the_catalogued_scenario(name: str) -> None:
    assert simulate(name, 5, duration_s=30, shape=Shape()).equals(simulate(name, 5, duration_s=30))


def test_native_levels_spelled_out_change_nothing() -> None:
    native = Shape(fleet="disaggregated", clients="timeout", dispatch="continuous", batch="shared-queue")
    assert simulate("healthy", 2, duration_s=40, shape=native).equals(simulate("healthy", 2, duration_s=40))
    retry_native = Shape(clients="retry", dispatch="continuous")
    assert simulate("retry-amplification", 2, duration_s=40, shape=retry_native).equals(simulate("retry-amplification", 2, duration_s=40))


# --- fleet shape --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colocated() -> pl.DataFrame:
    return run("healthy", fleet="colocated")


def test_colocated_is_one_pool_of_unified_devices(colocated: pl.DataFrame) -> None:
    info = device_info(colocated)
    assert info["pool"].unique().to_list() == ["serve"]
    assert set(info["accelerator"].unique().to_list()) == {"A100-40GB", "L40S"}  # one pool, two classes
    assert colocated.filter(pl.col("layer") == "queue")["queue"].n_unique() == 1


def test_colocated_has_no_kv_transfer_and_no_network_layer(colocated: pl.DataFrame) -> None:
    assert colocated.filter(pl.col("event") == "transfer").height == 0
    assert colocated.filter(pl.col("layer") == "network").height == 0


def test_colocated_prefill_and_decode_of_a_request_run_on_one_device(colocated: pl.DataFrame) -> None:
    x = execs(colocated).filter(pl.col("phase").is_in(["prefill", "decode"]))
    per = x.group_by("request_id").agg(devices=pl.col("device").n_unique(), phases=pl.col("phase").n_unique())
    both = per.filter(pl.col("phases") == 2)
    assert both.height > 0.95 * per.height
    assert (both["devices"] == 1).all()
    # one dispatch per attempt: the router places a request once, the device does the rest
    s = sched(colocated).filter(pl.col("workload_class").is_null() | (pl.col("workload_class") == "inference"))
    n_disp = s.filter(pl.col("event") == "dispatch").group_by("request_id", "attempt").len()
    assert (n_disp["len"] == 1).all()


def test_colocated_prefill_pauses_the_devices_running_decodes(colocated: pl.DataFrame) -> None:
    """A decode span that a prefill on its device overlaps lasts longer per token than one that
    no prefill overlaps (the device time-slices between the phases)."""
    x = execs(colocated).with_columns(end=END)
    dec = x.filter(pl.col("phase") == "decode").with_row_index("span")
    pre = x.filter(pl.col("phase") == "prefill").select("device", ps="ts", pe="end")
    hit = dec.join(pre, on="device").filter((pl.col("ps") > pl.col("ts")) & (pl.col("ps") < pl.col("end")))
    overlapped = dec.with_columns(hit=pl.col("span").is_in(hit["span"].implode()), per_tok=pl.col("dur_ms") / pl.col("tokens"))
    big = overlapped.filter(pl.col("tokens") >= 50)
    assert big.filter(pl.col("hit"))["per_tok"].median() > 1.05 * big.filter(~pl.col("hit"))["per_tok"].median()


def test_pools_are_independent_unified_pools_one_per_class() -> None:
    df = run("healthy", fleet="pools")
    info = device_info(df)
    per_pool = info.group_by("pool").agg(pl.col("accelerator").n_unique().alias("classes"), pl.len())
    assert per_pool.height == 2 and (per_pool["classes"] == 1).all()
    assert df.filter(pl.col("event") == "transfer").height == 0
    x = execs(df).group_by("request_id").agg(pl.col("device").n_unique())
    assert (x["device"] == 1).all()
    used = sched(df).filter(pl.col("event") == "dispatch")["pool"].unique().to_list()
    assert len(used) == 2  # the router uses both


@pytest.mark.parametrize("name", [n for n in sorted(SCENARIOS) if refusal(n, Shape(fleet="colocated"))])
def test_scenarios_that_need_disaggregation_refuse_colocated(name: str) -> None:
    assert name in ("memory-path-incoherence", "interconnect-capacity-inaccessibility")
    with pytest.raises(InputError, match="fleet=colocated"):
        run(name, fleet="colocated")


# --- clients ------------------------------------------------------------------------------------


def test_no_timeout_clients_never_time_out() -> None:
    native = run("burst-amplification")
    assert native.filter(pl.col("event") == "timeout").height > 0
    df = run("burst-amplification", clients="no-timeout")
    assert df.filter(pl.col("event").is_in(["timeout", "retry"])).height == 0
    r = requests(df)
    assert r["completed"].all()


def test_timeout_clients_give_up_without_retrying() -> None:
    df = run("burst-amplification", clients="timeout", fleet="colocated")
    assert df.filter(pl.col("event") == "timeout").height > 0
    assert df.filter(pl.col("event") == "retry").height == 0


def test_retrying_clients_retry_after_a_timeout() -> None:
    df = run("burst-amplification", clients="retry")
    s = sched(df)
    retries = s.filter(pl.col("event") == "retry")
    assert retries.height > 0 and retries["attempt"].max() <= 2
    # every retry follows a timeout of the previous attempt of that request
    timeouts = s.filter(pl.col("event") == "timeout").select("request_id", prev=pl.col("attempt"), t_to="ts")
    j = retries.join(timeouts, on="request_id").filter(pl.col("prev") == pl.col("attempt") - 1)
    assert j.height == retries.height and (j["ts"] > j["t_to"]).all()


def test_retry_amplification_needs_retrying_clients() -> None:
    for level in ("no-timeout", "timeout"):
        with pytest.raises(InputError, match="clients"):
            run("retry-amplification", clients=level)


# --- dispatch -----------------------------------------------------------------------------------


def _grid_share(df: pl.DataFrame, tick_s: float, tol_s: float) -> float:
    d = sched(df).filter(pl.col("event") == "dispatch")
    t = (d["ts"] - df["ts"].min()).dt.total_nanoseconds().to_numpy() / 1e9
    phase = np.mod(t + tick_s / 2, tick_s) - tick_s / 2
    return float(np.mean(np.abs(phase) <= tol_s))


@pytest.mark.parametrize("fleet", ["disaggregated", "colocated"])
def test_tick_dispatch_sits_on_the_tick_grid(fleet: str) -> None:
    tol = 2 * TICK.jitter_s
    ticked = run("healthy", fleet=fleet, dispatch="tick")
    assert _grid_share(ticked, TICK.tick_s, tol) > 0.99
    assert _grid_share(run("healthy", fleet=fleet), TICK.tick_s, tol) < 0.2
    # work waits for the next pass: about half a tick on average, never much more than one
    r = requests(ticked)
    assert 0.3 * TICK.tick_s * 1e3 < r["queue_wait_ms"].mean() < 2 * TICK.tick_s * 1e3


@pytest.mark.parametrize(("fleet", "pool", "margin"), [("disaggregated", "decode", 0.1), ("colocated", "serve", 0.03)])
def test_affinity_concentrates_work_on_the_popular_home_group(fleet: str, pool: str, margin: float) -> None:
    """Home groups are contiguous quarters of the serving devices (in fleet order); the first is
    the most popular. Continuous dispatch spreads the same work by load alone."""

    def share_of_first_quarter(df: pl.DataFrame) -> float:
        devices = df.filter((pl.col("event") == "device_info") & pl.col("pool").str.starts_with(pool))["device"].to_list()
        d = sched(df).filter((pl.col("event") == "dispatch") & pl.col("pool").str.starts_with(pool)).group_by("device").len()
        return d.filter(pl.col("device").is_in(devices[: len(devices) // 4]))["len"].sum() / d["len"].sum()

    affine = share_of_first_quarter(run("healthy", fleet=fleet, dispatch="affinity"))
    spread = share_of_first_quarter(run("healthy", fleet=fleet))
    assert affine > spread + margin, (affine, spread)


def test_affinity_spills_over_when_the_home_group_is_full() -> None:
    df = run("burst-amplification", fleet="colocated", dispatch="affinity")
    assert sched(df).filter(pl.col("event") == "dispatch")["device"].n_unique() == device_info(df).height


def test_queue_wait_dominance_is_the_periodic_dispatcher() -> None:
    assert refusal("queue-wait-dominance", Shape(dispatch="tick")) is None
    for level in ("continuous", "affinity"):
        assert refusal("queue-wait-dominance", Shape(dispatch=level)) is not None


# --- batch placement ----------------------------------------------------------------------------


@pytest.mark.parametrize("fleet", ["disaggregated", "colocated"])
def test_external_holds_hold_devices_for_minutes_without_scheduler_rows(fleet: str) -> None:
    df = run("healthy", duration_s=240, fleet=fleet, batch="external-holds")
    holds = execs(df).filter(pl.col("request_id").is_null())
    assert holds.height >= 2
    assert (holds["phase"] == "batch_job").all() and (holds["dur_ms"] >= 60_000).all()
    s = sched(df)
    assert s.filter(pl.col("workload_class") == "batch").height == 0 and s["request_id"].null_count() == 0
    assert "batch" not in " ".join(device_info(df)["pool"].unique().to_list())
    # a held device does nothing else: no dispatch to it and no other exec span on it meanwhile
    h = holds.with_columns(hend=END).select("device", hs="ts", hend="hend")
    on_held = s.filter(pl.col("event") == "dispatch").join(h, on="device").filter((pl.col("ts") > pl.col("hs")) & (pl.col("ts") < pl.col("hend")))
    assert on_held.height == 0
    other = execs(df).filter(pl.col("request_id").is_not_null()).with_columns(end=END).join(h, on="device")
    tol = pl.duration(microseconds=2)  # dur_ms is rounded to the microsecond
    assert other.filter((pl.col("ts") < pl.col("hend")) & (pl.col("end") > pl.col("hs") + tol)).height == 0


def test_shared_queue_batch_jobs_go_through_the_scheduler_of_a_colocated_fleet() -> None:
    df = run("batch-scheduling-conflict", duration_s=150, fleet="colocated")
    s = sched(df)
    jobs = s.filter((pl.col("event") == "arrive") & (pl.col("workload_class") == "batch"))
    assert jobs.height > 0 and set(jobs["pool"].to_list()) == {"serve"}
    job_exec = execs(df).filter(pl.col("phase") == "batch_job")
    assert job_exec["request_id"].null_count() == 0 and set(job_exec["request_id"].to_list()) <= set(jobs["request_id"].to_list())
    # a batch job has its device to itself
    x = execs(df).with_columns(end=END)
    j = job_exec.with_columns(jend=END).select("device", js="ts", jend="jend")
    overlap = x.filter(pl.col("phase") != "batch_job").join(j, on="device").filter((pl.col("ts") < pl.col("jend")) & (pl.col("end") > pl.col("js")))
    assert overlap.height == 0


def test_batch_scheduling_conflict_needs_the_shared_queue() -> None:
    with pytest.raises(InputError, match="batch=external-holds"):
        run("batch-scheduling-conflict", batch="external-holds")


# --- telemetry present / absent -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> pl.DataFrame:
    return run("virtualization-control-distortion", duration_s=60)


@pytest.mark.parametrize("part", TELEMETRY_PARTS)
def test_a_telemetry_mask_removes_exactly_the_named_column_or_layer(part: str, full: pl.DataFrame) -> None:
    masked = run("virtualization-control-distortion", duration_s=60, telemetry=Telemetry.without(part))
    if part in ("network", "hypervisor"):
        assert full.filter(pl.col("layer") == part).height > 0
        assert set(full.columns) - set(masked.columns) == set(LAYER_ONLY_COLUMNS[part])
        expected = full.filter(pl.col("layer") != part).select(masked.columns)
    else:
        assert set(full.columns) - set(masked.columns) == {part}
        expected = full.select(masked.columns)
    assert masked.equals(expected)


def test_minimal_telemetry_removes_all_five(full: pl.DataFrame) -> None:
    masked = run("virtualization-control-distortion", duration_s=60, telemetry=Telemetry.without(*TELEMETRY_PARTS))
    assert set(masked["layer"].unique().to_list()) == {"scheduler", "queue", "gpu"}
    assert not {"predicted_ms", "sm_active", "kv_cache_util", "link_util", "steal_frac"} & set(masked.columns)
    assert masked.height == full.filter(~pl.col("layer").is_in(["network", "hypervisor"])).height


def test_masked_hypervisor_layer_leaves_the_condition_in_place(full: pl.DataFrame) -> None:
    masked = run("virtualization-control-distortion", duration_s=60, telemetry=Telemetry.without("hypervisor"))
    x_full, x_masked = execs(full), execs(masked)
    assert x_full.select("ts", "device", "dur_ms").equals(x_masked.select("ts", "device", "dur_ms"))


# --- length ---------------------------------------------------------------------------------------


def test_length_sets_the_arrival_window() -> None:
    df = simulate("healthy", 1, shape=Shape(length_s=180.0), scale=1.0)
    arrivals = sched(df).filter(pl.col("event") == "arrive")["ts"]
    span = (arrivals.max() - arrivals.min()).total_seconds()
    assert 175 < span <= 180


def test_length_outside_3_to_30_minutes_and_two_lengths_are_refused() -> None:
    for bad in (60.0, 3600.0):
        with pytest.raises(ValueError, match="length_s"):
            Shape(length_s=bad)
    with pytest.raises(InputError, match="duration_s"):
        simulate("healthy", 1, duration_s=60, shape=Shape(length_s=180.0))


# --- validation, determinism, validity ------------------------------------------------------------


def test_unknown_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="fleet"):
        Shape(fleet="mesh")
    with pytest.raises(ValueError, match="telemetry"):
        Telemetry.without("power_w")
    with pytest.raises(InputError, match="shape"):
        simulate("healthy", 1, duration_s=10, shape="colocated")  # type: ignore[arg-type]


CELLS = [
    dict(fleet="colocated", clients="retry", dispatch="tick", batch="external-holds"),
    dict(fleet="pools", clients="no-timeout", dispatch="affinity", batch="shared-queue"),
    dict(fleet="disaggregated", clients="timeout", dispatch="affinity", batch="external-holds"),
]


@pytest.mark.parametrize("knobs", CELLS, ids=lambda k: ".".join(k.values()))
def test_same_seed_and_shape_same_frame(knobs: dict[str, str]) -> None:
    a = run("slot-locking", seed=11, duration_s=60, **knobs)
    assert a.equals(run("slot-locking", seed=11, duration_s=60, **knobs))
    assert not a.equals(run("slot-locking", seed=12, duration_s=60, **knobs))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_applicable_level_gives_a_valid_trace(name: str) -> None:
    """Each level of each knob the scenario applies in, one at a time and in a combined cell."""
    applies = SCENARIOS[name].applies
    knobs = (("fleet", FLEETS), ("clients", CLIENTS), ("dispatch", DISPATCHES), ("batch", BATCH_PLACEMENTS))
    shapes = [Shape(**{knob: level}) for knob, levels in knobs for level in levels if level in applies.levels(knob)]
    shapes.append(Shape(fleet=applies.fleet[0], clients=applies.clients[-1], dispatch=applies.dispatch[-1], batch=applies.batch[-1]))
    for i, shape in enumerate(shapes):
        df = simulate(name, 20 + i, duration_s=45, shape=shape)
        assert trace_violations(df) == [], shape.label
