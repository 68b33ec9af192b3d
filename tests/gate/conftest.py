"""Shared fixtures of the gate tests: each sample trace is analyzed once per session."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from coherence_diag.analysis import analyze
from coherence_diag.gate import Policy, load_policy
from coherence_diag.model import Report
from tests.conftest import REPO

SAMPLES = REPO / "sample_traces"
POLICIES = REPO / "policies"
LABELS = json.loads((SAMPLES / "labels.json").read_text())["traces"]
BASELINES = [e for e in LABELS if e["kind"] == "baseline"]
DEGRADED = [e for e in LABELS if e["kind"] != "baseline"]


@pytest.fixture(scope="session")
def sample_report() -> Callable[[str], Report]:
    """Report of a shipped sample by scenario name, analyzed on first use and cached."""
    cache: dict[str, Report] = {}

    def get(scenario: str) -> Report:
        if scenario not in cache:
            cache[scenario] = analyze(SAMPLES / f"{scenario}.parquet").report
        return cache[scenario]

    return get


@pytest.fixture(scope="session")
def default_policy() -> Policy:
    return load_policy(POLICIES / "serving-default.yaml")


@pytest.fixture(scope="session")
def regression_policy() -> Policy:
    return load_policy(POLICIES / "regression.yaml")


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path
