"""Loading and validating labels.json: every problem named with the file and what was expected."""

from __future__ import annotations

import json

import pytest

from coherence_diag.errors import InputError, LabelsError
from coherence_diag.scoring import labels_path, load_labels
from tests.scoring.conftest import BURST, TRACES, VALIDATION


def _write(tmp_path, data) -> object:
    path = tmp_path / "labels.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _good(**changes):
    data = {"rule_ids": [BURST], "controls": ["healthy"], "traces": [dict(TRACES[0]), dict(TRACES[2])]}
    data.update(changes)
    return data


def test_a_directory_or_the_file_itself(tmp_path):
    path = _write(tmp_path, _good())
    assert labels_path(tmp_path) == path and labels_path(path) == path
    by_dir, by_file = load_labels(tmp_path), load_labels(path)
    assert by_dir == by_file
    assert by_dir.root == tmp_path and by_dir.rule_ids == (BURST,)
    assert [(t.id, t.control, t.seed, t.expected) for t in by_dir.traces] == [("s0-healthy", True, 0, ()), ("s0-burst", False, 0, (BURST,))]


def test_optional_fields_default(tmp_path):
    data = {"rule_ids": [BURST], "traces": [{"id": "x", "scenario": BURST, "path": "x.parquet", "expected": [BURST]}]}
    (trace,) = load_labels(_write(tmp_path, data)).traces
    assert (trace.allowed, trace.control, trace.seed) == ((), False, None)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{not json", "not valid JSON (line 1 column 2"),
        ("[]", "expected a JSON object with rule_ids and traces, got a list"),
        (_good(rule_ids="burst"), "'rule_ids' must be a list of rule ids, got a string"),
        (_good(rule_ids=[]), "'rule_ids' is empty"),
        (_good(traces=[]), "'traces' must be a non-empty list of trace entries"),
        (_good(traces=[{**TRACES[2], "expected": "burst-amplification"}]), "trace #1 ('s0-burst'): 'expected' must be a list of rule ids"),
        (_good(traces=[{**TRACES[2], "expected": ["slot-locking"]}]), "expected rule 'slot-locking' is not one of the file's rule_ids"),
        (_good(traces=[{**TRACES[2], "allowed": [BURST]}]), "burst-amplification both expected and allowed"),
        (_good(traces=[{**TRACES[2], "path": ""}]), "'path' must be a non-empty string"),
        (_good(traces=[{**TRACES[2], "seed": "1"}]), "'seed' must be an integer or null, got '1'"),
        (_good(traces=[{**TRACES[0], "expected": [BURST]}]), "a control must expect nothing"),
        (_good(traces=[{**TRACES[0], "control": False}]), "'control' is false but scenario 'healthy' is in the file's controls"),
        (_good(traces=[TRACES[2], TRACES[2]]), "trace 's0-burst': duplicate trace id"),
        (_good(traces=[{k: v for k, v in TRACES[2].items() if k != "id"}]), "trace #1: 'id' must be a non-empty string"),
    ],
)
def test_bad_labels_name_file_and_problem(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(LabelsError) as info:
        load_labels(path)
    message = str(info.value)
    assert message.startswith(f"invalid labels file: {path}: "), message
    assert needle in message, message
    assert isinstance(info.value, InputError)  # the CLI's exit 2


def test_every_problem_reported_at_once(tmp_path):
    path = _write(tmp_path, _good(traces=[{**TRACES[2], "seed": True}, {**TRACES[0], "path": 3}]))
    with pytest.raises(LabelsError, match=r"\(2 problems\)"):
        load_labels(path)


def test_missing_suite_and_missing_labels_file(tmp_path):
    with pytest.raises(LabelsError, match="no labels.json in this directory"):
        load_labels(tmp_path)
    with pytest.raises(LabelsError, match="not found; expected a suite directory holding labels.json"):
        load_labels(tmp_path / "nowhere")


@pytest.mark.skipif(not VALIDATION.is_dir(), reason="../shared/validation not available")
def test_the_shared_validation_labels_load():
    labels = load_labels(VALIDATION)
    assert len(labels.rule_ids) == 13 and len(labels.traces) == 30
    assert sum(t.control for t in labels.traces) == 4
