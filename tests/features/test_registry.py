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


def test_declared_values_pass(scratch_registry):
    @feature_group("fake_group", [FeatureSpec("fake_a", "count", "d", ()), FeatureSpec("fake_b", "ms", "d", ("col",))])
    def fake(ctx):
        return GroupResult({"fake_a": 3.0}, reasons={"fake_b": "no col"})

    out = compute(_ctx({"col"}), {"fake_a", "fake_b"})
    assert out.values == {"fake_a": 3.0, "fake_b": None}
    assert out.reasons == {"fake_b": "no col"}


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
