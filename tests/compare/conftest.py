"""Shared comparisons: each is computed once per session (an analysis of a sample takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coherence_diag.compare import compare_envs, compare_traces
from coherence_diag.simulate import simulate, write_trace

SAMPLES = Path(__file__).resolve().parents[2] / "sample_traces"


@pytest.fixture(scope="session")
def healthy_seed1(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compare") / "healthy-seed1.parquet"
    write_trace(simulate("healthy", 1), path)
    return path


@pytest.fixture(scope="session")
def migration():
    return compare_envs(SAMPLES / "migration-reconfiguration-risk.parquet")


@pytest.fixture(scope="session")
def healthy_vs_healthy(healthy_seed1):
    return compare_traces(SAMPLES / "healthy.parquet", healthy_seed1)


@pytest.fixture(scope="session")
def before_after():
    """A before/after pair: a burst-amplified fleet (before) and the healthy one (after)."""
    return compare_traces(SAMPLES / "burst-amplification.parquet", SAMPLES / "healthy.parquet")
