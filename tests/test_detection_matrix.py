"""The structural matrix of benchmarks/detection.py (`--matrix`): its design, not its run (the
run takes minutes: `make detection`)."""

from __future__ import annotations

import itertools
import json

import pytest

from benchmarks.detection import LENGTHS_S, TELEMETRY_MASKS, Cell, matrix_cells, write_labels
from coherence_diag.simulate import SCENARIOS, Shape
from coherence_diag.simulate.shape import KNOB_LEVELS
from coherence_diag.simulate.variants import refusal

CELLS = [c for rep in range(2) for c in matrix_cells(rep)]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_applicable_level_of_every_knob_has_a_cell(name: str) -> None:
    cells = [c for c in CELLS if c.scenario == name and c.rep == 0]
    applies = SCENARIOS[name].applies
    for knob in KNOB_LEVELS:
        assert {c.shape.level(knob) for c in cells} == set(applies.levels(knob)), knob
    assert {c.shape.telemetry for c in cells} == set(TELEMETRY_MASKS)
    assert {c.shape.length_s for c in cells} == set(LENGTHS_S)
    assert all(refusal(name, c.shape) is None for c in cells)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_structural_knobs_are_covered_pairwise(name: str) -> None:
    cells = [c for c in CELLS if c.scenario == name and c.rep == 0]
    applies = SCENARIOS[name].applies
    for a, b in itertools.combinations(KNOB_LEVELS, 2):
        seen = {(c.shape.level(a), c.shape.level(b)) for c in cells}
        assert seen == set(itertools.product(applies.levels(a), applies.levels(b))), (a, b)


def test_cells_are_few_short_and_seeded_apart() -> None:
    per_rep = [c for c in CELLS if c.rep == 0]
    assert len(per_rep) <= 12 * len(SCENARIOS)
    assert sum(c.shape.length_s == LENGTHS_S[0] for c in per_rep) >= 0.75 * len(per_rep)
    assert len({c.seed for c in CELLS}) == len(CELLS)
    assert matrix_cells(0) == matrix_cells(0)  # deterministic


def test_labels_follow_the_shared_validation_format(tmp_path) -> None:
    cells = [Cell("healthy", 7, Shape(fleet="colocated", length_s=180.0)), Cell("slot-locking", 8, Shape(batch="external-holds", length_s=600.0))]
    write_labels(tmp_path, cells)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert set(labels) >= {"rule_ids", "controls", "traces", "scoring"}
    healthy, slot = labels["traces"]
    for entry in (healthy, slot):
        assert set(entry) >= {"id", "scenario", "path", "expected", "allowed", "control", "seed"}
    assert (healthy["expected"], healthy["control"]) == ([], True)
    # The co-reports the independent suite accepts beside slot locking; its external holds are slot locking itself.
    assert (slot["expected"], slot["control"]) == (["slot-locking"], False)
    assert slot["allowed"] == ["batch-scheduling-conflict", "queue-wait-dominance"]
    assert healthy["allowed"] == []
