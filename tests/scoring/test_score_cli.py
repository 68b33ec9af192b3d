"""`coherence-diag rules score` through the CLI: formats, schema, atomic output, exit codes."""

from __future__ import annotations

import json

import jsonschema
import pytest

from coherence_diag.render.score import schema
from tests.scoring.conftest import TRACES, VALIDATION, write_suite


def test_json_validates_and_is_written_atomically(run_cli, suite, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "score.json"
    result = run_cli("rules", "score", suite, "--jobs", "1", "--format", "json", "-o", out)
    assert result.exit_code == 0, result.output  # no --min-macro-f1: no gate, even with a control alarm
    data = json.loads(out.read_text())
    jsonschema.validate(data, schema())
    assert data["macro_f1"] == pytest.approx(7 / 15, abs=1e-6) and data["gate"] is None
    assert [t["id"] for t in data["traces"]] == [t["id"] for t in TRACES]
    assert data["control_false_alarms"][0]["trace"] == "s1-healthy-alarm"
    assert [p.name for p in out_dir.iterdir()] == ["score.json"]  # no temp file left


def test_json_with_gate_validates(run_cli, clean_suite):
    result = run_cli("rules", "score", clean_suite, "--jobs", "1", "--format", "json", "--min-macro-f1", "0.9")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, schema())
    assert data["gate"] == {"min_macro_f1": 0.9, "passed": True, "failures": []}


def test_terminal_and_markdown(run_cli, suite):
    terminal = run_cli("rules", "score", suite, "--jobs", "1")
    assert terminal.exit_code == 0, terminal.output
    assert "macro-F1 0.467 over 5 rule ids" in terminal.stdout
    assert "control false alarm" in terminal.stdout and "MISS" in terminal.stdout and "ERROR" in terminal.stdout
    rows = terminal.stdout
    assert rows.index("queue-wait-dominance") < rows.index("burst-amplification") < rows.index("latency-asymmetry-drift")  # worst F1 first
    markdown = run_cli("rules", "score", suite, "--jobs", "1", "--format", "markdown")
    assert markdown.exit_code == 0
    text = markdown.stdout
    assert text.startswith("## coherence-diag rules score") and "**Macro-F1: 0.467**" in text
    for heading in ("### Per rule (worst F1 first)", "### Per trace", "### Confusion", "### Control false alarms", "### Index directions"):
        assert heading in text
    assert "| sla-degradation-without-shortage | queue-wait-dominance | 2 | 0 |" in text


@pytest.mark.parametrize(
    "threshold, code",
    [("0", 1), ("0.4", 1)],  # macro-F1 7/15 passes 0.4, but a control raised a false alarm
)
def test_min_macro_f1_fails_on_a_control_false_alarm(run_cli, suite, threshold, code):
    result = run_cli("rules", "score", suite, "--jobs", "1", "--min-macro-f1", threshold)
    assert result.exit_code == code
    assert "accuracy gate FAIL" in result.stdout and "control false alarm" in result.stdout


def test_min_macro_f1_exit_codes_without_control_alarm(run_cli, tmp_path, clean_suite):
    assert run_cli("rules", "score", clean_suite, "--jobs", "1", "--min-macro-f1", "1").exit_code == 0
    wrong = write_suite(tmp_path, [TRACES[0], {**TRACES[2], "expected": ["slot-locking"]}], rule_ids=["burst-amplification", "slot-locking"])
    result = run_cli("rules", "score", wrong, "--jobs", "1", "--min-macro-f1", "0.5", "--format", "markdown")
    assert result.exit_code == 1  # macro-F1 0 (burst: fp; slot-locking: missed)
    assert "accuracy gate FAIL: macro-F1 0.000 is below 0.5" in result.stdout
    assert run_cli("rules", "score", wrong, "--jobs", "1").exit_code == 0  # no gate asked


def test_bad_labels_exit_2_with_one_message_and_no_output(run_cli, tmp_path):
    labels = tmp_path / "suite" / "labels.json"
    labels.parent.mkdir()
    labels.write_text(json.dumps({"rule_ids": ["x"], "traces": [{"id": "a", "scenario": "s", "path": "a.parquet", "expected": "x"}]}))
    out = tmp_path / "out.json"
    result = run_cli("rules", "score", labels, "--format", "json", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: invalid labels file: {labels}: trace #1 ('a'): 'expected' must be a list of rule ids")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]  # no output, no temp file


def test_no_suite_and_output_inside_the_suite_exit_2(run_cli, tmp_path, suite):
    result = run_cli("rules", "score", tmp_path / "nothing-here")
    assert result.exit_code == 2 and "expected a suite directory holding labels.json" in result.stderr
    result = run_cli("rules", "score", suite, "-o", suite / "score.txt")
    assert result.exit_code == 2 and "refusing to write" in result.stderr
    assert not (suite / "score.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(not VALIDATION.is_dir(), reason="../shared/validation not available")
def test_the_shared_validation_suite(run_cli):
    result = run_cli("rules", "score", VALIDATION, "--jobs", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, schema())
    assert data["counts"]["traces"] == 30 and len(data["rules"]) == 13
    assert data["counts"]["error"] == 0 and data["unknown_rule_ids"] == []
    assert 0 <= data["macro_f1"] <= 1
    assert data["direction_counts"]["skipped"] == 0  # both seeds hold every scenario
