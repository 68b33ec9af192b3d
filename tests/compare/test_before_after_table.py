"""The before/after table (seed 004 §8.1 style): every contract metric, deltas and direction."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from coherence_diag import measures
from coherence_diag.compare import _change
from coherence_diag.render.compare import render_json, render_markdown, render_terminal, schema

# Every field of report-contract.md `metrics`, quantiles spelled out.
CONTRACT_METRICS = [
    *(f"{m}.{q}" for m in ("latency_ms", "queue_wait_ms", "ttft_ms") for q in ("p50", "p95", "p99")),
    "nominal_utilization", "effective_utilization", "timeout_rate", "drop_rate", "slo_attainment", "goodput_rps",
]


def test_every_contract_metric_and_index_is_in_the_table(before_after):
    names = [m.name for m in before_after.measures]
    for name in CONTRACT_METRICS + ["CI", "DI", "WPI", "HCL"]:
        assert name in names


def test_table_rows_carry_values_delta_and_relative_change(before_after):
    for m in before_after.measures:
        if m.base is not None and m.candidate is not None:
            assert m.delta == pytest.approx(m.candidate - m.base)
            if m.base != 0:
                assert m.relative_change == pytest.approx((m.candidate - m.base) / abs(m.base))


def test_before_after_pair_improves_tail_latency(before_after):
    by_name = {m.name: m for m in before_after.measures}
    assert by_name["latency_ms.p99"].change == "better"
    assert by_name["CI"].candidate > by_name["CI"].base


@pytest.mark.parametrize("fmt", ["terminal", "markdown"])
def test_rendered_table_names_every_metric(before_after, fmt):
    if fmt == "terminal":
        console = Console(record=True, width=200, file=open("/dev/null", "w"))
        render_terminal(before_after, console)
        text = console.export_text()
    else:
        text = render_markdown(before_after)
    for name in CONTRACT_METRICS:
        label = measures.MEASURES[name].label
        assert label in text, label
    assert "before / after" in text.lower()


@pytest.mark.parametrize("which", ["before_after", "migration", "healthy_vs_healthy"])
def test_json_follows_the_shipped_schema(request, which):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(render_json(request.getfixturevalue(which))), schema())


def test_json_holds_the_same_table(before_after):
    doc = json.loads(render_json(before_after))
    assert doc["kind"] == "comparison" and doc["schema_version"] == "1"
    assert [m["name"] for m in doc["measures"]] == [m.name for m in before_after.measures]
    assert {s["signal"] for s in doc["shifts"]} == {"latency_ms", "ttft_ms", "queue_wait_ms"}


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(name=st.sampled_from(sorted(n for n, m in measures.MEASURES.items() if m.better != "neither")), b=finite, c=finite)
def test_swapping_sides_swaps_better_and_worse(name, b, c):
    m = measures.MEASURES[name]
    forward, backward = _change(m, b, c), _change(m, c, b)
    swap = {"better": "worse", "worse": "better", "unchanged": "unchanged"}
    # Relative changes are not symmetric (+10% one way is -9.1% the other): near the threshold a
    # move can be "unchanged" one way only. Away from it, the verdict flips exactly.
    if forward in swap and backward in swap and "unchanged" not in (forward, backward):
        assert backward == swap[forward]


@given(name=st.sampled_from(sorted(measures.MEASURES)), v=finite)
def test_equal_values_are_unchanged(name, v):
    assert _change(measures.MEASURES[name], v, v) == "unchanged"


def test_a_missing_side_is_not_applicable():
    m = measures.MEASURES["latency_ms.p99"]
    assert _change(m, None, 3.0) == "n/a" and _change(m, 3.0, None) == "n/a"


def test_components_hold_the_synchronization_map_of_both_sides(migration):
    kinds = {c.kind for c in migration.components}
    assert kinds == {"layer", "link", "pool"}
    links = {c.name: c for c in migration.components if c.kind == "link"}
    assert set(links) == {"scheduler_compute", "compute_network", "network_serving", "end_to_end", "environment"}
    # The migration degrades the end-to-end alignment it is diagnosed from.
    assert links["end_to_end"].delta < 0
    for c in migration.components:
        if c.base is not None and c.candidate is not None:
            assert c.delta == pytest.approx(c.candidate - c.base)
