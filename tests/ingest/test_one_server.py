"""Issue 11's merge acceptance: one vLLM server's spans (`vllm-otlp`), engine metrics
(`prometheus`) and GPU metrics (`dcgm`), converted together, make one trace whose request paths,
queue depth and GPU samples line up in time, and whose report evaluates more rules than any of
the three sources alone. The fixture (tests/fixtures/one_server/) is generated from one schedule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from coherence_diag.cli import app
from coherence_diag.rules.loader import load_rules
from tests.conftest import REPO

HERE = REPO / "tests" / "fixtures" / "one_server"
SOURCES = {
    "vllm-otlp": HERE / "vllm_traces.json",
    "prometheus": HERE / "gpu-node-a.prom",
    "dcgm": HERE / "dcgm.prom",
}
MERGED = [arg for name, path in SOURCES.items() for arg in ("--from", name, str(path))] + ["--map", str(HERE / "map.yaml")]
SECOND_NS = 1_000_000_000


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("one-server") / "trace.parquet"
    result = CliRunner().invoke(app, ["convert", *MERGED, "-o", str(out)])
    assert result.exit_code == 0, result.output
    trace = pl.read_parquet(out)
    return trace.with_columns(pl.col("ts").dt.epoch("ns")) if trace.schema["ts"] != pl.Int64 else trace


def _requests(trace: pl.DataFrame) -> pl.DataFrame:
    events = trace.filter(pl.col("layer") == "scheduler").select("request_id", "event", "ts")
    return events.pivot(on="event", index="request_id", values="ts")


def test_queue_depth_samples_count_the_requests_waiting_at_their_instant(merged: pl.DataFrame) -> None:
    requests = _requests(merged)
    samples = merged.filter((pl.col("layer") == "queue") & (pl.col("event") == "sample")).select("ts", "queue", "pool", "depth")
    assert samples.height == 24 and samples["pool"].unique().to_list() == ["chat"]
    waiting = (
        samples.join(requests, how="cross")
        .group_by("ts", "depth")
        .agg(((pl.col("arrive") <= pl.col("ts")) & (pl.col("ts") < pl.col("dispatch"))).sum().alias("waiting"))
    )
    assert waiting["depth"].to_list() == waiting["waiting"].cast(pl.Float64).to_list()
    assert waiting["depth"].max() > 0  # the burst queued requests


def test_gpu_samples_and_exec_spans_are_on_one_device_and_agree_on_busy_time(merged: pl.DataFrame) -> None:
    gpu = merged.filter(pl.col("layer") == "gpu")
    assert gpu["device"].n_unique() == 1  # spans, engine KV samples (mapped) and DCGM share the device
    spans = gpu.filter(pl.col("event") == "exec").select(
        pl.col("ts").alias("start"), (pl.col("ts") + (pl.col("dur_ms") * 1e6).cast(pl.Int64)).alias("end")
    ).sort("start")
    utilization = gpu.filter(pl.col("gpu_util").is_not_null()).select("ts", "gpu_util").sort("ts")
    assert utilization.height == 24
    intervals = spans.rows()
    for ts, util in utilization.iter_rows():  # 24 samples of a tiny fixture: the union by hand
        lo, busy, reach = ts - 5 * SECOND_NS, 0, ts - 5 * SECOND_NS
        for start, end in intervals:
            a, b = max(start, reach, lo), min(end, ts)
            if b > a:
                busy += b - a
            reach = max(reach, min(end, ts))
        assert util == pytest.approx(busy / (5 * SECOND_NS), abs=0.011)  # DCGM rounds to whole percent


def test_requests_fall_within_the_metrics_observation(merged: pl.DataFrame) -> None:
    requests = _requests(merged)
    samples = merged.filter(pl.col("event") == "sample")["ts"]
    assert requests["arrive"].min() >= samples.min() - 5 * SECOND_NS
    assert requests["complete"].max() <= samples.max() + 5 * SECOND_NS


def _evaluated_rules(args: list[str], tmp_path: Path) -> set[str]:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["analyze", *args, "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["provenance"]["sources"], "the report carries the provenance"
    rule_ids = {rule.id for rule in load_rules([])}
    return {k for k, v in report["evaluability"].items() if k in rule_ids and v["evaluated"]}


def test_the_merged_report_evaluates_more_rules_than_any_single_source(tmp_path: Path) -> None:
    merged = _evaluated_rules(MERGED, tmp_path)
    for name, path in SOURCES.items():
        single = _evaluated_rules(["--from", name, str(path)], tmp_path)
        assert single < merged, f"{name} alone evaluates {sorted(single)}, merged {sorted(merged)}"


def test_the_fixture_is_what_its_generator_writes() -> None:
    pytest.importorskip("prometheus_client")
    spec = importlib.util.spec_from_file_location("one_server_fixture", HERE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.disable_created_metrics()
    requests = module.schedule()
    assert (HERE / "vllm_traces.json").read_text() == module.spans(requests)
    assert (HERE / "gpu-node-a.prom").read_text() == module.engine_metrics(requests)
    assert (HERE / "dcgm.prom").read_text() == module.dcgm(requests)
    assert (HERE / "map.yaml").read_text() == module.MAP
