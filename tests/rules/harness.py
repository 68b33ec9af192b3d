"""Shared harness for rule test cases: small simulated traces, simulated once per session, or
small fixtures of a foreign source converted in memory (rules on telemetry the simulator does not
produce, such as GPU memory in use)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from coherence_diag import analyze
from coherence_diag.analysis import Analysis
from coherence_diag.simulate import simulate, write_trace

_TMP = Path(tempfile.mkdtemp(prefix="coherence-rule-cases-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)  # the cached traces go with the test run


@functools.cache
def analyzed(scenario: str, seed: int, duration_s: float | None = None, naming: str = "plain") -> Analysis:
    """Simulate a scenario (cached per arguments), write it as Parquet, analyze it."""
    path = _TMP / f"{scenario}-{seed}-{duration_s}-{naming}.parquet"
    if not path.exists():
        write_trace(simulate(scenario, seed, duration_s=duration_s, naming=naming), path)
    return analyze(path)


REPO = Path(__file__).resolve().parents[2]


@functools.cache
def converted(source: str, path: str) -> Analysis:
    """A fixture of a `convert` source (path relative to the repository), analyzed in memory."""
    from coherence_diag.convert import open_inputs

    return analyze(open_inputs([(source, str(REPO / path))]))
