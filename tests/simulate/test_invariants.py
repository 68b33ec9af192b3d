"""Every scenario's output satisfies trace-format v1 and the simulator's own promises."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag.simulate import SCENARIOS, simulate

from .sim_metrics import ALLOWED_EVENTS, trace_violations

SPEC_COLUMNS = {
    "ts", "layer", "event", "host", "device", "env", "request_id", "pool", "priority", "workload_class", "slo_ms",
    "ttft_slo_ms", "predicted_ms", "prompt_tokens", "output_tokens", "attempt", "queue", "depth", "dur_ms", "phase",
    "batch_size", "tokens", "gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "power_w", "accelerator",
    "mig_profile", "virtualized", "src_device", "dst_device", "bytes", "kind", "link", "link_util", "retransmits",
    "steal_frac", "cotenant_util", "vgpu_wait_ms",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_output_is_a_valid_trace(name: str, trace: Callable[[str], pl.DataFrame]) -> None:
    assert trace_violations(trace(name)) == []


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_columns_are_exactly_the_spec_columns_with_spec_types(name: str, trace: Callable[[str], pl.DataFrame]) -> None:
    df = trace(name)
    assert set(df.columns) == SPEC_COLUMNS
    assert df.schema["dur_ms"] == pl.Float64 and df.schema["virtualized"] == pl.Boolean
    for col in ("priority", "attempt", "depth", "bytes", "prompt_tokens", "output_tokens", "tokens", "batch_size"):
        assert df.schema[col] == pl.Int64, col


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_all_layers_present_and_requests_drain(name: str, trace: Callable[[str], pl.DataFrame]) -> None:
    df = trace(name)
    layers = set(df["layer"].unique().to_list())
    assert layers >= {"scheduler", "queue", "gpu", "network", "hypervisor"}
    events = set(df["event"].unique().to_list())
    assert {"arrive", "dispatch", "first_token", "complete", "exec", "transfer", "sample", "device_info"} <= events
    # arrivals stop before the end: nothing is left running when the trace ends
    last_arrival = df.filter(pl.col("event") == "arrive")["ts"].max()
    assert df["ts"].max() > last_arrival


def test_retries_use_both_forms(trace: Callable[[str], pl.DataFrame]) -> None:
    s = trace("retry-amplification").filter(pl.col("layer") == "scheduler")
    retried = s.filter(pl.col("event") == "retry").select("request_id", "attempt")
    with_arrive = retried.join(s.filter(pl.col("event") == "arrive").select("request_id", "attempt"), on=["request_id", "attempt"])
    assert 0 < with_arrive.height < retried.height
    assert retried["attempt"].min() >= 1


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_tiny_windows_stay_tiny(name: str) -> None:
    """Injected rate shapes (bursts, steps) scale with the window; they never compound."""
    df = simulate(name, seed=4, duration_s=0.5)
    assert trace_violations(df) == []
    assert df.filter((pl.col("event") == "arrive") & (pl.col("attempt") == 0)).height <= 60


class TestCheckerCatchesBreakage:
    """The invariant checker is only useful if it can fail."""

    @pytest.fixture()
    def df(self) -> pl.DataFrame:
        return simulate("retry-amplification", seed=1, duration_s=60)

    def test_clean(self, df: pl.DataFrame) -> None:
        assert trace_violations(df) == []

    def test_fraction_out_of_range(self, df: pl.DataFrame) -> None:
        broken = df.with_columns(pl.when(pl.col("event") == "sample").then(pl.col("gpu_util") * 3).otherwise(pl.col("gpu_util")))
        assert any("gpu_util" in v for v in trace_violations(broken))

    def test_missing_terminal(self, df: pl.DataFrame) -> None:
        victim = df.filter(pl.col("event") == "complete")["request_id"][0]
        broken = df.filter(~((pl.col("event") == "complete") & (pl.col("request_id") == victim)))
        assert any("terminal" in v for v in trace_violations(broken))

    def test_completion_before_arrival(self, df: pl.DataFrame) -> None:
        broken = df.with_columns(
            pl.when(pl.col("event") == "complete").then(pl.col("ts") - pl.duration(hours=1)).otherwise(pl.col("ts")).alias("ts")
        )
        assert any("before" in v for v in trace_violations(broken))

    def test_duplicate_and_unknown_event(self, df: pl.DataFrame) -> None:
        broken = pl.concat([df, df.head(3).with_columns(event=pl.lit("explode"))])
        found = trace_violations(pl.concat([broken, df.tail(1)]))
        assert any("unknown events" in v for v in found) and any("duplicate" in v for v in found)

    def test_negative_duration(self, df: pl.DataFrame) -> None:
        broken = df.with_columns(pl.when(pl.col("event") == "transfer").then(-pl.col("dur_ms")).otherwise(pl.col("dur_ms")))
        assert any("dur_ms" in v for v in trace_violations(broken))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SCENARIOS)),
    seed=st.integers(min_value=0, max_value=10_000),
    duration=st.floats(min_value=3.0, max_value=60.0),
    scale=st.floats(min_value=0.05, max_value=0.6),
)
def test_any_size_and_seed_gives_a_valid_trace(name: str, seed: int, duration: float, scale: float) -> None:
    df = simulate(name, seed, duration_s=duration, scale=scale)
    assert trace_violations(df) == []
    assert set(df["layer"].unique().to_list()) <= set(ALLOWED_EVENTS)
