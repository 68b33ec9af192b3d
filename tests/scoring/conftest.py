"""A tiny labelled suite built from the shipped sample traces, in the labels.json format of
../shared/validation, with a control that raises a false alarm, a deliberately wrong label,
an allowed id, a trace that cannot be read, and a rule nothing expects or reports.

Seed 0: healthy and legitimate-queueing (controls, quiet), burst-amplification (found), the
    queue-wait-dominance trace labelled as sla-degradation-without-shortage (wrong label: one
    false negative for sla, one false positive for queue-wait-dominance).
Seed 1: the memory-path-incoherence trace labelled as the control `healthy` (a control false
    alarm) and as itself (found); the queue-wait-dominance trace labelled as
    sla-degradation-without-shortage with queue-wait-dominance allowed (a miss, no false positive).
Seed 2: healthy, and a burst-amplification trace whose file does not exist (error: a miss,
    null indices).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SHARED

SAMPLES = REPO / "sample_traces"
VALIDATION = SHARED / "validation"
SAMPLE_FILES = ("healthy", "legitimate-queueing", "burst-amplification", "queue-wait-dominance", "memory-path-incoherence")

BURST, QWD, SLA, MEM, LAD = (
    "burst-amplification",
    "queue-wait-dominance",
    "sla-degradation-without-shortage",
    "memory-path-incoherence",
    "latency-asymmetry-drift",
)
RULE_IDS = [BURST, QWD, SLA, MEM, LAD]


def entry(id: str, scenario: str, sample: str, seed: int, expected=(), allowed=(), control=False) -> dict[str, Any]:
    return {
        "id": id,
        "scenario": scenario,
        "path": f"traces/{sample}.parquet",
        "expected": list(expected),
        "allowed": list(allowed),
        "control": control,
        "seed": seed,
    }


TRACES = [
    entry("s0-healthy", "healthy", "healthy", 0, control=True),
    entry("s0-legit", "legitimate-queueing", "legitimate-queueing", 0, control=True),
    entry("s0-burst", BURST, BURST, 0, expected=[BURST]),
    entry("s0-qwd-wrong", QWD, QWD, 0, expected=[SLA]),
    entry("s1-healthy-alarm", "healthy", MEM, 1, control=True),
    entry("s1-mem", MEM, MEM, 1, expected=[MEM]),
    entry("s1-sla-allowed", SLA, QWD, 1, expected=[SLA], allowed=[QWD]),
    entry("s2-healthy", "healthy", "healthy", 2, control=True),
    entry("s2-burst-missing", BURST, "missing", 2, expected=[BURST]),
]


def write_suite(directory: Path, traces: list[dict[str, Any]], rule_ids: list[str] = RULE_IDS, **extra: Any) -> Path:
    """A suite directory: labels.json plus the sample traces it names (copied, never linked)."""
    (directory / "traces").mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_FILES:
        target = directory / "traces" / f"{name}.parquet"
        if not target.exists() and any(t["path"] == f"traces/{name}.parquet" for t in traces):
            shutil.copy(SAMPLES / f"{name}.parquet", target)
    labels = {
        "about": "test suite built from sample_traces/",
        "scoring": "as ../shared/validation/labels.json",
        "rule_ids": rule_ids,
        "controls": ["healthy", "legitimate-queueing"],
        "traces": traces,
        **extra,
    }
    (directory / "labels.json").write_text(json.dumps(labels, indent=2))
    return directory


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite"), TRACES)


@pytest.fixture(scope="session")
def clean_suite(tmp_path_factory) -> Path:
    """Every label right, no control alarm: macro-F1 1."""
    traces = [entry("h", "healthy", "healthy", 0, control=True), entry("b", BURST, BURST, 0, expected=[BURST])]
    return write_suite(tmp_path_factory.mktemp("clean"), traces, rule_ids=[BURST])
