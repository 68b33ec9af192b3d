"""The claims of docs/case-studies.md, on the real public traces in ../shared/real_traces
(skipped when absent). Each runs the documented command's library equivalent."""

from __future__ import annotations

import pytest

from coherence_diag.analysis import analyze
from coherence_diag.convert import open_inputs
from tests.conftest import SHARED

REAL = SHARED / "real_traces"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_traces is absent")

AZURE_CODE = REAL / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
AZURE_CONV = REAL / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = REAL / "mooncake_fast25" / "conversation_trace.jsonl"
POISSON = REAL / "mooncake_fast25" / "synthetic_trace_POISSON_CONTROL.jsonl"
GENTD26 = REAL / "alibaba_gentd26"


def _run(source: str, path) -> tuple[dict[str, float | None], dict[str, str]]:
    report = analyze(open_inputs([(source, str(path))]), with_features=True).report
    assert report.provenance is not None and report.provenance.sources[0].name == source
    values = {name: r.value for name, r in (report.features or {}).items()}
    return values, {f.rule: f.severity for f in report.findings}


def test_azure_code_is_bursty_and_conversation_near_poisson():
    code, code_findings = _run("azure-llm", AZURE_CODE)
    conv, conv_findings = _run("azure-llm", AZURE_CONV)
    assert code["arrival_local_idc"] > 8 and code["arrival_empty_excess_frac"] > 0.3  # on/off, bursty
    assert conv["arrival_local_idc"] < 1.3 and conv["arrival_empty_excess_frac"] < 0.02  # near-Poisson within the minute
    assert code["prompt_load_local_dispersion"] > 5 > 1.1 > conv["prompt_load_local_dispersion"]
    assert {"arrival-burstiness", "token-load-burst"} <= set(code_findings)
    assert "arrival-burstiness" not in conv_findings and "token-load-burst" not in conv_findings
    assert "arrival-rate-shift" in conv_findings and conv["arrival_rate_change_ratio"] > 10  # its rate moves over minutes
    assert set(code_findings.values()) == {"low"} and set(conv_findings.values()) == {"low"}


def test_mooncake_conversation_against_its_poisson_control():
    conv, conv_findings = _run("mooncake", MOONCAKE)
    control, control_findings = _run("mooncake", POISSON)
    assert conv["arrival_clock_tick_ms"] == pytest.approx(3000, abs=5) and conv["arrival_fine_scale_ms"] >= 3000
    assert control["arrival_clock_tick_ms"] == 0
    assert conv["arrival_local_idc"] < 1.2 and control["arrival_local_idc"] < 1.2  # neither bursty within the minute
    assert conv["arrival_rate_change_ratio"] > 2.5 > 1.3 > control["arrival_rate_change_ratio"]
    assert conv_findings == {} and control_findings == {}


def test_gentd26_containers_hold_gpu_memory_at_zero_duty_cycle():
    values, findings = _run("alibaba-gentd26", GENTD26)
    assert findings.get("idle-memory-hold") == "critical"
    assert values["idle_hold_sample_frac"] > 0.6 and values["idle_hold_memory_frac"] > 0.6
    assert values["idle_hold_device_frac"] > 0.8 and values["idle_hold_queued_frac"] > 0.05


@pytest.mark.slow
def test_azure_code_replay_amplifies_waiting_where_conversation_does_not(run_cli, tmp_path):
    reports = {}
    for name, path in (("code", AZURE_CODE), ("conv", AZURE_CONV)):
        out = tmp_path / f"{name}-replay.parquet"
        done = run_cli("simulate", "--scenario", "healthy", "--arrivals", path, "--duration", "900", "-o", out)
        assert done.exit_code == 0, done.stderr
        reports[name] = analyze(out).report
        assert reports[name].provenance is not None and "replayed" in reports[name].provenance.sources[0].notes[0]
    code, conv = reports["code"], reports["conv"]
    assert code.indices.DI > 0.3 and conv.indices.DI < 0.01
    assert code.metrics.queue_wait_ms.p99 > 2000 > 100 > conv.metrics.queue_wait_ms.p99
    assert code.indices.CI < 0.5 < 0.9 < conv.indices.CI
    assert (code.metrics.timeout_rate or 0) > 0.01 and not conv.metrics.timeout_rate
    assert "arrival-burstiness" in {f.rule for f in code.findings}
