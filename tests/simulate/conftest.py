"""Shared fixtures: every scenario is simulated once per session (seed 0, default size)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # allow `pytest tests/simulate` without an installed package
    sys.path.insert(0, str(REPO_ROOT))

from coherence_diag.simulate import simulate  # noqa: E402

SHARED = REPO_ROOT / ".." / "shared"
REAL_TRACES = SHARED / "real_traces"


@pytest.fixture(scope="session")
def trace() -> Callable[[str], pl.DataFrame]:
    cache: dict[str, pl.DataFrame] = {}

    def get(name: str) -> pl.DataFrame:
        if name not in cache:
            cache[name] = simulate(name, seed=0)
        return cache[name]

    return get
