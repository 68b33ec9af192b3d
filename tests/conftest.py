from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coherence_diag.cli import app
from tests.tracegen import TraceSpec, make_trace, write

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _run


@pytest.fixture
def trace_frame():
    return make_trace(TraceSpec(n_requests=120, seed=3))


@pytest.fixture
def trace_file(tmp_path, trace_frame):
    path = tmp_path / "trace.parquet"
    write(trace_frame, path)
    return path


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
