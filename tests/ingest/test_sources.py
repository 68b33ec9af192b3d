"""Each source converts its fixture (tests/fixtures/, hand-made in the source's real shape) to a
trace that validates, `analyze --from` on it exits 0 and its report carries the provenance; bad
input exits 2 with one line naming the file, the record and what was expected, writing nothing."""

from __future__ import annotations

import json

import jsonschema
import polars as pl
import pytest

from coherence_diag import schema, validate
from coherence_diag.convert import convert, open_inputs
from coherence_diag.ingest import open_trace, provenance_path
from coherence_diag.ingest.registry import SOURCES
from coherence_diag.render.json_report import schema as report_schema
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
CASES = {
    "azure-llm": FIXTURES / "azure_llm" / "AzureLLMInferenceTrace_small.csv",
    "mooncake": FIXTURES / "mooncake" / "conversation_small.jsonl",
    "burstgpt": FIXTURES / "burstgpt" / "BurstGPT_small.csv",
    "alibaba-gentd26": FIXTURES / "alibaba_gentd26",
    "prometheus": FIXTURES / "prometheus" / "vllm_snapshots.prom",
    "dcgm": FIXTURES / "dcgm" / "dcgm_mig_vgpu.prom",
    "vllm-otlp": FIXTURES / "vllm_otlp" / "vllm_traces.json",
}


def test_every_source_has_a_fixture():
    assert set(CASES) == set(SOURCES)


@pytest.mark.parametrize("source", sorted(CASES))
def test_fixture_converts_to_a_valid_trace_and_analyzes_with_provenance(run_cli, tmp_path, source):
    out = tmp_path / "trace.parquet"
    result = run_cli("convert", "--from", source, CASES[source], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and provenance_path(out).is_file()
    checked = validate.validate(open_trace(out))  # the written file is a trace in the trace format
    assert checked.audit.filter(~pl.col("warning")).is_empty()
    report = run_cli("analyze", "--from", source, CASES[source], "--format", "json", "--no-progress")
    assert report.exit_code == 0, report.stderr
    data = json.loads(report.stdout)
    jsonschema.validate(data, report_schema())
    assert data["provenance"]["sources"][0]["name"] == source
    written = run_cli("analyze", out, "--format", "json", "--no-progress")
    assert json.loads(written.stdout)["provenance"] == data["provenance"]  # read back from TRACE.provenance.json


def test_every_output_column_has_its_provenance_and_absent_ones_are_empty(tmp_path):
    for source, path in CASES.items():
        converted = convert([(source, str(path))], tmp_path / f"{source}.parquet")
        frame = pl.read_parquet(converted.output)
        layers = set(frame["layer"].unique())
        for layer in layers:
            rows = frame.filter(pl.col("layer") == layer)
            given = {c for c in rows.columns if c in schema.LAYER_COLUMNS[layer] and rows[c].null_count() < rows.height}
            statuses = {c.column: c.status for c in converted.provenance.columns if c.layer == layer}
            assert all(statuses[c] != "absent" for c in given), (source, layer, given, statuses)
            assert all(c in given for c, s in statuses.items() if s != "absent"), (source, layer)
        for c in converted.provenance.columns:
            if c.layer not in layers:
                assert c.status == "absent"


def test_azure_fixture_keeps_every_record_and_its_nanoseconds(tmp_path):
    converted = convert([("azure-llm", str(CASES["azure-llm"]))], tmp_path / "a.parquet")
    raw = pl.read_csv(CASES["azure-llm"], infer_schema=False)
    frame = pl.read_parquet(converted.output)
    assert frame.height == raw.height and set(frame["event"]) == {"arrive"}
    first = frame.sort("ts").row(0, named=True)
    assert first["ts"].isoformat().startswith("2023-11-16T18:15:47.540836")  # 7 digits: to 100 ns
    assert int(frame.sort("ts")["ts"].dt.epoch("ns")[0]) % 100 == 0


def test_burstgpt_failed_requests_get_no_output_count_and_no_invented_failure_time(tmp_path):
    converted = convert([("burstgpt", str(CASES["burstgpt"]))], tmp_path / "b.parquet")
    frame = pl.read_parquet(converted.output)
    failed = frame.filter(pl.col("failed"))
    assert failed.height == 2 and failed["output_tokens"].null_count() == 2
    assert set(frame["event"]) == {"arrive"}  # no drop rows: the failure time is not recorded


def test_gentd26_maps_units_and_lists_what_it_does_not_convert(tmp_path):
    converted = convert([("alibaba-gentd26", str(CASES["alibaba-gentd26"]))], tmp_path / "g.parquet")
    frame = pl.read_parquet(converted.output)
    gpu = frame.filter(pl.col("layer") == "gpu")
    assert gpu["gpu_util"].max() <= 1.0 and gpu["gpu_util"].max() > 0.2  # percent -> fraction
    assert gpu["mem_used_bytes"].min() == 800_000_000
    queue = frame.filter(pl.col("layer") == "queue")
    assert set(queue.filter(pl.col("depth").is_not_null())["queue"]) == {"gateway"}
    assert queue["wait_ms"].drop_nulls().min() >= 100
    use = converted.provenance.sources[0]
    assert use.unmapped == {"unmapped_record:container_ip": 1}  # the duty sample of no container
    assert any(n.startswith("qps.csv not converted") for n in use.notes)
    assert converted.set_aside.get("unmapped_record:container_ip") == 1


def test_merged_sources_align_relative_clocks_to_the_absolute_one(tmp_path):
    source = open_inputs([("azure-llm", str(CASES["azure-llm"])), ("mooncake", str(CASES["mooncake"]))])
    frame = source.frame
    azure_start = frame.filter(pl.col("_origin") == 0)["ts"].min()
    mooncake_start = frame.filter(pl.col("_origin") == 1)["ts"].min()
    assert azure_start == mooncake_start
    offsets = {s.name: s.offset_s for s in source.provenance.sources}
    assert offsets["azure-llm"] == 0 and offsets["mooncake"] > 1.7e9


def test_start_sets_the_origin_of_a_relative_clock():
    source = open_inputs([("mooncake", str(CASES["mooncake"]))], start="2024-01-01T00:00:00Z")
    assert source.frame["ts"].min() == 1_704_067_200 * 10**9


def test_user_values_are_supplied_and_checked(tmp_path, run_cli):
    out = tmp_path / "t.parquet"
    mapping = tmp_path / "map.yaml"
    mapping.write_text("set:\n  scheduler.pool: chat\nmap:\n  host:\n    from: device\n    values: {23b8eba99c14e73d454503a55ae96989: node-1}\n")
    result = run_cli(
        "convert", "--from", "azure-llm", CASES["azure-llm"], "--from", "alibaba-gentd26", CASES["alibaba-gentd26"],
        "--set", "scheduler.slo_ms=20000", "--map", mapping, "-o", out,
    )
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(out)
    sched = frame.filter(pl.col("layer") == "scheduler")
    assert set(sched["slo_ms"]) == {20000.0} and set(sched["pool"]) == {"chat"}
    assert set(frame.filter(pl.col("layer") == "gpu")["host"].drop_nulls()) == {"node-1"}
    prov = json.loads(provenance_path(out).read_text())
    supplied = {(c["layer"], c["column"]) for c in prov["columns"] if c["status"] == "supplied"}
    assert {("scheduler", "slo_ms"), ("scheduler", "pool"), ("gpu", "host")} <= supplied
    bad = run_cli("convert", "--from", "azure-llm", CASES["azure-llm"], "--set", "scheduler.slo_ms=-5", "-o", tmp_path / "x.parquet")
    assert bad.exit_code == 2 and "slo_ms" in bad.stderr and not (tmp_path / "x.parquet").exists()


BAD = [
    ("azure-llm", FIXTURES / "bad" / "azure_mixed_units.csv", "record 3", "mixed units"),
    ("azure-llm", FIXTURES / "bad" / "unknown_fields.csv", "not a azure-llm file", "TIMESTAMP"),
    ("azure-llm", CASES["mooncake"], "not a", "TIMESTAMP"),
    ("mooncake", FIXTURES / "bad" / "mooncake_mixed_units.jsonl", "record 3", "mixed units"),
    ("mooncake", FIXTURES / "bad" / "not_json.jsonl", "record 1", "JSON"),
    ("mooncake", CASES["azure-llm"], "record 1", "JSON"),
    ("burstgpt", FIXTURES / "bad" / "burstgpt_mixed_units.csv", "record 2", "mixed units"),
    ("burstgpt", CASES["azure-llm"], "not a burstgpt file", "Log Type"),
    ("alibaba-gentd26", CASES["azure-llm"], "not a alibaba-gentd26 file", "pod_gpu_duty_cycle_anon.csv"),
    ("prometheus", CASES["azure-llm"], "line 1", "not Prometheus text exposition"),
    ("prometheus", FIXTURES / "bad" / "prometheus_untimed.prom", "carries no time", "# ts="),
    ("prometheus", FIXTURES / "bad" / "prometheus_unknown_only.prom", "not a prometheus file", "vllm:num_requests_waiting"),
    ("prometheus", FIXTURES / "bad" / "prometheus_mixed_units.json", "record 3", "mixed units"),
    ("dcgm", CASES["prometheus"], "not a dcgm file", "DCGM_FI_DEV_GPU_UTIL"),
]


@pytest.mark.parametrize(("source", "path", "where", "expected"), BAD, ids=[f"{s}:{p.name}" for s, p, _, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(run_cli, tmp_path, source, path, where, expected):
    out = tmp_path / "t.parquet"
    result = run_cli("convert", "--from", source, path, "-o", out)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert str(path) in message and where in message and expected in message, message
    assert not out.exists() and not provenance_path(out).exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_source_and_missing_output_are_usage_errors(run_cli, tmp_path):
    assert run_cli("convert", "--from", "nope", CASES["azure-llm"], "-o", tmp_path / "t.parquet").exit_code == 2
    assert run_cli("convert", "--from", "azure-llm", CASES["azure-llm"]).exit_code == 2
    both = run_cli("analyze", CASES["azure-llm"], "--from", "azure-llm", CASES["azure-llm"])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_list_names_every_source_with_what_it_can_and_cannot_supply(run_cli):
    result = run_cli("convert", "--list")
    assert result.exit_code == 0
    for name, adapter in SOURCES.items():
        assert f"{name}:" in result.stdout
        assert all(line in result.stdout for line in adapter.cannot_supply)


def test_too_many_unparsed_records_reject_the_conversion(tmp_path, run_cli):
    bad = tmp_path / "azure.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0000000,abc,1\n")
    result = run_cli("convert", "--from", "azure-llm", bad, "-o", tmp_path / "t.parquet")
    assert result.exit_code == 2 and "unparsed_field" in result.stderr and "ContextTokens" in result.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_gate_judges_foreign_telemetry_converted_in_memory(run_cli, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("policy: 1\nname: no-findings\nchecks:\n  - id: no-finding-above-low\n    findings: {max_severity: low}\n")
    result = run_cli("gate", "--from", "alibaba-gentd26", CASES["alibaba-gentd26"], "--policy", policy, "--format", "json", "--no-progress")
    assert result.exit_code == 1, result.stderr  # idle-memory-hold fires above low
    assert json.loads(result.stdout)["trace"].startswith("alibaba-gentd26:")
