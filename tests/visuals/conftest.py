"""Analyses shared by the visuals and chart tests (module-independent, built once per session)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from coherence_diag import analyze
from tests.tracegen import TraceSpec, make_trace, write

SAMPLES = Path(__file__).resolve().parents[2] / "sample_traces"
# Degraded, healthy, and one with board power swinging against latency.
SAMPLE_NAMES = ("burst-amplification", "healthy", "energy-latency-mismatch")

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
# Device and pool names of tests/tracegen.py replaced by hostile ones.
HOSTILE = {"gpu-0": SCRIPT, "gpu-2": IMG, "prefill": IMG, "decode": SCRIPT + "-decode"}


@pytest.fixture(scope="session")
def sample_analyses():
    return {name: analyze(SAMPLES / f"{name}.parquet") for name in SAMPLE_NAMES}


@pytest.fixture(scope="session")
def scheduler_only(tmp_path_factory):
    """A trace with the scheduler layer alone and no SLOs: most visuals must be omitted."""
    frame = make_trace(TraceSpec(n_requests=150, seed=5, gpu=False, network=False, queue=False, hypervisor=False, slo_ms=None))
    frame = frame.filter(pl.col("layer") == "scheduler")
    path = tmp_path_factory.mktemp("sched") / "trace.parquet"
    write(frame, path)
    return analyze(path)


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """A small trace whose device and pool names are script and img-onerror payloads."""
    frame = make_trace(TraceSpec(n_requests=240, seed=11))
    names = [c for c in ("device", "pool", "src_device", "dst_device") if c in frame.columns]
    frame = frame.with_columns(pl.col(c).replace(HOSTILE) for c in names)
    path = tmp_path_factory.mktemp("hostile") / "trace.parquet"
    write(frame, path)
    return analyze(path)
