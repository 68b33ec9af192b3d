"""The feature registry keeps groups honest: declared units, declared outputs, independent families."""

from __future__ import annotations

import tomllib
from types import SimpleNamespace

import pytest

from coherence_diag import features
from coherence_diag.features.registry import FEATURES, GROUPS, UNITS, FeatureGroup, FeatureSpec, GroupResult, compute, feature_group
from tests.conftest import REPO


@pytest.fixture
def scratch_registry():
    """Register fake groups for one test; the real registry is restored afterwards."""
    features_before, groups_before = dict(FEATURES), dict(GROUPS)
    yield
    FEATURES.clear()
    FEATURES.update(features_before)
    GROUPS.clear()
    GROUPS.update(groups_before)


def _ctx(columns: set[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(columns=columns or set())  # all that compute() reads besides the group


def test_every_shipped_feature_declares_a_known_unit():
    assert {spec.unit for spec in FEATURES.values()} <= set(UNITS)


def test_an_unknown_unit_is_rejected_at_registration(scratch_registry):
    with pytest.raises(ValueError, match=r"'fake_speed'.*'fake_group'.*unit 'km/h' is not one of frac, ratio"):

        @feature_group("fake_group", [FeatureSpec("fake_ok", "frac", "d", ()), FeatureSpec("fake_speed", "km/h", "d", ())])
        def fake(ctx):
            return GroupResult({})

    assert "fake_ok" not in FEATURES and "fake_group" not in GROUPS  # nothing half-registered


def test_a_feature_declared_twice_is_rejected(scratch_registry):
    with pytest.raises(ValueError, match="'tail_ratio' is declared twice"):

        @feature_group("fake_group", [FeatureSpec("tail_ratio", "ratio", "d", ())])
        def fake(ctx):
            return GroupResult({})


def test_an_undeclared_value_is_a_programming_error(scratch_registry):
    @feature_group("fake_group", [FeatureSpec("fake_a", "count", "d", ())])
    def fake(ctx):
        return GroupResult({"fake_a": 1.0, "fake_b": 2.0})

    with pytest.raises(RuntimeError, match="feature group 'fake_group' returned values for 'fake_b', which it does not declare"):
        compute(_ctx(), {"fake_a"})


@pytest.mark.parametrize("part", ["details", "missing", "reasons"])
def test_undeclared_details_missing_or_reasons_are_programming_errors(scratch_registry, part):
    @feature_group("fake_group", [FeatureSpec("fake_a", "count", "d", ())])
    def fake(ctx):
        extra = {"details": {"fake_b": {}}, "missing": {"fake_b": ("x",)}, "reasons": {"fake_b": "why"}}[part]
        return GroupResult({"fake_a": 1.0}, **{part: extra})

    with pytest.raises(RuntimeError, match=f"'fake_group' returned {part} for 'fake_b'"):
        compute(_ctx(), {"fake_a"})


def test_an_undefined_feature_carries_the_groups_reason_or_a_gap_marker(scratch_registry):
    names = ["fake_a", "fake_b", "fake_c", "fake_d", "fake_e", "fake_f"]

    @feature_group("fake_group", [FeatureSpec(n, "count", "d", ("col",) if n == "fake_f" else ()) for n in names])
    def fake(ctx):
        return GroupResult(
            {"fake_a": 3.0, "fake_b": None, "fake_c": float("nan"), "fake_d": None},
            reasons={"fake_b": "no col", "fake_a": "ignored: it has a value"},
            missing={"fake_d": ("other",)},
        )

    out = compute(_ctx(), set(names))
    assert out.values == dict.fromkeys(names, None) | {"fake_a": 3.0}
    gap = "not computed by fake_group"
    assert out.reasons == {"fake_b": "no col", "fake_c": gap, "fake_e": gap}
    assert out.missing == {"fake_d": ("other",), "fake_f": ("col",)}


def test_a_group_wide_reason_and_explain(scratch_registry):
    @feature_group("fake_group", [FeatureSpec(n, "ratio", "d", ()) for n in ("fake_a", "fake_b", "fake_c")])
    def fake(ctx):
        result = GroupResult({"fake_a": None, "fake_b": None}, reason="no burst in this trace")
        return result.explain("fewer than 10 samples", ["fake_b"]).explain("never used", ["fake_b"])

    out = compute(_ctx(), {"fake_a", "fake_b", "fake_c"})
    no_burst = "no burst in this trace"
    assert out.reasons == {"fake_a": no_burst, "fake_b": "fewer than 10 samples", "fake_c": no_burst}


@pytest.mark.parametrize("sample", ["healthy", "legitimate-queueing", "migration-reconfiguration-risk"])
def test_shipped_groups_say_why_a_feature_is_undefined(sample):
    """No shipped group leaves a feature undefined without a reason or missing columns (on sample
    traces with many undefined features)."""
    from coherence_diag import ingest, metrics, paths, validate

    trace = validate.validate(ingest.open_trace(REPO / "sample_traces" / f"{sample}.parquet"))
    requests = paths.request_paths(trace.layers)
    values, _ = metrics.compute(requests, trace.layers, trace.columns, metrics.observation_span(trace.layers))
    out = compute(features.FeatureContext.build(requests, trace.layers, trace.columns, values, 1.0))
    undefined = {n for n, v in out.values.items() if v is None}
    assert undefined  # the check means something
    assert undefined == set(out.reasons) | set(out.missing)
    assert not [r for r in out.reasons.values() if r.startswith("not computed by")]


def test_an_undeclared_value_exits_3_as_a_bug(monkeypatch, run_cli, trace_file):
    group = GROUPS["metrics"]

    def leaky(ctx):
        result = group.fn(ctx)
        result.values["not_a_feature"] = 1.0
        return result

    monkeypatch.setitem(GROUPS, "metrics", FeatureGroup(group.name, leaky, group.outputs))
    result = run_cli("analyze", trace_file, "--format", "json", "--no-progress")
    assert result.exit_code == 3
    assert "internal error: RuntimeError" in result.stderr and "'metrics'" in result.stderr and "'not_a_feature'" in result.stderr


def test_the_independence_contract_lists_every_feature_family():
    """Every module that registers a feature group is a family the import-linter contract keeps
    independent of the others (pyproject.toml)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (independent,) = [c for c in contracts if c["type"] == "independence" and "features" in c["modules"][0]]
    families = {group.fn.__module__ for group in features.GROUPS.values()}
    assert families == set(independent["modules"])
