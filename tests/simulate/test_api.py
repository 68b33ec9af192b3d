"""The public surface: scenario catalogue, argument validation, time origin and naming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from coherence_diag.errors import InputError
from coherence_diag.simulate import SCENARIOS, Scenario, simulate, write_trace
from coherence_diag.taxonomy import BASELINES, MODES, PATTERNS


class TestCatalogue:
    def test_every_report_contract_mode_and_pattern_has_a_scenario(self) -> None:
        kinds = {name: s.kind for name, s in SCENARIOS.items()}
        assert {n for n, k in kinds.items() if k == "mode"} == set(MODES)
        assert {n for n, k in kinds.items() if k == "pattern"} == set(PATTERNS)
        assert {n for n, k in kinds.items() if k == "baseline"} == set(BASELINES)

    @pytest.mark.parametrize("name", sorted(SCENARIOS))
    def test_scenario_record(self, name: str) -> None:
        s = SCENARIOS[name]
        assert isinstance(s, Scenario)
        assert s.name == name
        assert s.expected_rule == (None if s.kind == "baseline" else name)
        assert len(s.description) > 40

    def test_injected_scenarios_differ_from_baseline_params(self) -> None:
        base = SCENARIOS["healthy"].params
        for name, s in SCENARIOS.items():
            if name != "healthy":
                assert s.params != base, name


class TestValidation:
    def test_unknown_scenario_names_value_and_choices(self) -> None:
        with pytest.raises(InputError) as exc:
            simulate("no-such-scenario")
        msg = str(exc.value)
        assert "no-such-scenario" in msg and "healthy" in msg and "expected" in msg

    @pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), 1e9])
    def test_bad_scale(self, scale: float) -> None:
        with pytest.raises(InputError, match="scale"):
            simulate("healthy", scale=scale)

    @pytest.mark.parametrize("duration", [0, -5.0, float("nan")])
    def test_bad_duration(self, duration: float) -> None:
        with pytest.raises(InputError, match="duration_s"):
            simulate("healthy", duration_s=duration)

    @pytest.mark.parametrize("seed", [-1, 1.5, True])
    def test_bad_seed(self, seed: object) -> None:
        with pytest.raises(InputError, match="seed"):
            simulate("healthy", seed=seed)  # type: ignore[arg-type]

    def test_bad_naming(self) -> None:
        with pytest.raises(InputError, match="naming"):
            simulate("healthy", naming="fancy")


class TestTimeAndNames:
    def test_default_origin_is_2026_utc(self) -> None:
        df = simulate("healthy", duration_s=10)
        assert df.schema["ts"] == pl.Datetime("ns", "UTC")
        assert df["ts"].min() == datetime(2026, 1, 1, tzinfo=UTC)

    def test_time_origin_shifts_every_timestamp(self) -> None:
        a = simulate("healthy", duration_s=10)
        origin = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
        b = simulate("healthy", duration_s=10, time_origin=origin)
        shift = origin - datetime(2026, 1, 1, tzinfo=UTC)
        assert b.drop("ts").equals(a.drop("ts"))
        assert (b["ts"] - a["ts"]).unique().to_list() == [shift]

    def test_naive_origin_means_utc_and_offsets_are_converted(self) -> None:
        naive = simulate("healthy", duration_s=5, time_origin=datetime(2030, 1, 1))
        aware = simulate("healthy", duration_s=5, time_origin=datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
        assert naive.equals(aware)

    def test_random_naming_hides_roles_but_keeps_structure(self) -> None:
        plain = simulate("interconnect-capacity-inaccessibility", duration_s=60)
        rnd = simulate("interconnect-capacity-inaccessibility", duration_s=60, naming="random")
        assert plain.height == rnd.height
        for col in ("pool", "device", "host", "link", "queue", "env", "src_device", "dst_device"):
            plain_vals = set(plain[col].drop_nulls().unique().to_list())
            rnd_vals = set(rnd[col].drop_nulls().unique().to_list())
            assert len(plain_vals) == len(rnd_vals), col
            assert not plain_vals & rnd_vals, col
            for v in rnd_vals:  # nothing that reveals role, vendor or rack
                assert not any(w in v for w in ("prefill", "decode", "h100", "a100", "l40s", "mi300", "rack", "nic", "onprem", "cloud"))
        # the non-name content is untouched
        names = ["pool", "device", "host", "link", "queue", "env", "src_device", "dst_device"]
        assert plain.drop(names).equals(rnd.drop(names))

    def test_random_names_depend_on_seed(self) -> None:
        a = simulate("healthy", seed=1, duration_s=5, naming="random")
        b = simulate("healthy", seed=2, duration_s=5, naming="random")
        assert set(a["device"].drop_nulls().unique()) != set(b["device"].drop_nulls().unique())


def test_public_names_exist() -> None:
    assert callable(simulate) and callable(write_trace)
