"""The framework around the adapters: the schema's alternatives ("host or device", "depth or
wait_ms"), validation through the TraceSource protocol, and `simulate --arrivals` from every
request source with its provenance in the report."""

from __future__ import annotations

import json

import polars as pl
import pytest

from coherence_diag import schema, validate
from coherence_diag.errors import TraceError
from coherence_diag.ingest import FrameSource, TraceSource, open_trace, provenance_path
from coherence_diag.ingest.registry import SOURCES
from tests.conftest import REPO
from tests.ingest.test_sources import CASES


def _source(rows: list[dict]) -> FrameSource:
    frame = pl.DataFrame(rows).with_columns(
        pl.col("ts").cast(pl.Int64), pl.int_range(pl.len()).cast(pl.UInt32).alias("_record"), pl.lit(0, pl.Int32).alias("_origin")
    )
    return FrameSource("mem", frame, ("mem",))


def test_required_alternatives_are_declared_once_in_the_schema():
    assert ("host", "device") in schema.REQUIRED_VALUES[("hypervisor", "migrate")]
    assert schema.describe_required(("depth", "wait_ms")) == "`depth` or `wait_ms`"
    page = (REPO / "docs" / "trace-schema.md").read_text()
    assert "| `hypervisor` | `migrate` | `env`, `host` or `device` |" in page


def test_migrate_with_a_device_alone_is_kept_and_with_neither_set_aside():
    rows = [
        {"ts": 1, "layer": "hypervisor", "event": "migrate", "env": "cloud", "host": None, "device": "d0"},
        {"ts": 2, "layer": "hypervisor", "event": "migrate", "env": "cloud", "host": "h1", "device": None},
        {"ts": 3, "layer": "hypervisor", "event": "migrate", "env": "cloud", "host": None, "device": None},
    ] + [{"ts": 10 + i, "layer": "hypervisor", "event": "sample", "env": "cloud", "host": "h1", "device": None} for i in range(300)]
    checked = validate.validate(_source(rows))
    assert checked.set_aside_counts() == {"missing_value:host": 1}
    assert checked.audit["example_rows"].to_list() == [[2]]


def test_queue_samples_need_a_depth_or_a_wait():
    rows = [{"ts": i, "layer": "queue", "event": "sample", "queue": "q", "wait_ms": 5.0} for i in range(200)]
    assert validate.validate(_source(rows)).rows_by_layer == {"queue": 200}
    no_measure = [{"ts": i, "layer": "queue", "event": "sample", "queue": "q"} for i in range(5)]
    with pytest.raises(TraceError, match="missing required column `depth` or `wait_ms`"):
        validate.validate(_source(no_measure))


def test_files_and_adapters_are_trace_sources(tmp_path):
    assert isinstance(open_trace(REPO / "sample_traces" / "healthy.parquet"), TraceSource)
    assert isinstance(_source([{"ts": 1, "layer": "queue", "event": "sample", "queue": "q", "depth": 1}]), TraceSource)


@pytest.mark.parametrize("source", sorted(n for n, a in SOURCES.items() if a.arrivals))
def test_simulate_replays_every_request_source_and_the_report_says_so(run_cli, tmp_path, source):
    out = tmp_path / "sim.parquet"
    result = run_cli("simulate", "--scenario", "healthy", "--arrivals", CASES[source], "--duration", "30", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"arrivals replayed from {source}" in result.stderr
    prov = json.loads(provenance_path(out).read_text())
    assert prov["sources"][0]["name"] == source
    assert any("replayed through a simulated fleet" in n for n in prov["sources"][0]["notes"])
    statuses = {(c["layer"], c["column"]): c["status"] for c in prov["columns"]}
    assert statuses[("scheduler", "ts")] == "derived" and statuses[("gpu", "dur_ms")] == "simulated"
    report = run_cli("analyze", out, "--no-progress")
    assert "provenance (converted trace)" in report.stdout and "replayed through a simulated fleet" in report.stdout


def test_simulate_refuses_a_source_without_arrivals(run_cli, tmp_path):
    result = run_cli(
        "simulate", "--scenario", "healthy", "--arrivals", CASES["alibaba-gentd26"], "--arrivals-from", "alibaba-gentd26", "-o", tmp_path / "s.parquet"
    )
    assert result.exit_code == 2 and "carries no request arrivals" in result.stderr
    assert not (tmp_path / "s.parquet").exists()
