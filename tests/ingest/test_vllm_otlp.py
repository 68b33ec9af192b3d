"""`vllm-otlp`: vLLM's llm_request spans (OTLP-JSON lines, as the Collector's file exporter
writes them) become scheduler and gpu exec rows; every value traces back to a span field or a
documented derivation; bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import schema
from coherence_diag.convert import convert, open_inputs, read_arrivals
from coherence_diag.errors import TraceError
from coherence_diag.ingest import provenance_path
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "vllm_otlp" / "vllm_traces.json"
MAP = REPO / "tests" / "fixtures" / "vllm_otlp" / "map.yaml"
T0 = 1_748_858_400_000_000_000
NODE = {"host.name": "node-1", "coherence.device": "node-1/GPU-0"}


def value(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    return {"stringValue": v}


def attrs(mapping: dict) -> list[dict]:
    return [{"key": k, "value": value(v)} for k, v in mapping.items() if v is not None]


def span(i: int, *, start: int = T0, dur_s: float = 2.0, name: str = "llm_request", parent: str = "", **attributes) -> dict:
    return {
        "traceId": f"{i:032x}", "spanId": f"{i:016x}", "parentSpanId": parent, "name": name, "kind": 2,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + round(dur_s * 1e9)), "attributes": attrs(attributes), "status": {},
    }


def request(i: int, *, start: int = T0, queue=0.01, ttft=0.05, e2e=1.5, prefill=0.03, decode=1.4, prompt=100, completion=50, finish=None, **extra):
    latency = {"time_in_queue": queue, "time_to_first_token": ttft, "e2e": e2e, "time_in_model_prefill": prefill, "time_in_model_decode": decode}
    fields = {f"gen_ai.latency.{k}": v for k, v in latency.items()}
    fields.update({"gen_ai.request.id": f"req-{i}", "gen_ai.usage.prompt_tokens": prompt, "gen_ai.usage.completion_tokens": completion})
    fields["gen_ai.response.finish_reasons"] = finish
    fields.update(extra)
    return span(i, start=start, dur_s=(e2e or 1.0) + 0.0002, **fields)


def line(spans: list[dict], resource: dict | None = None) -> str:
    res = {"attributes": attrs(resource if resource is not None else NODE)}
    return json.dumps({"resourceSpans": [{"resource": res, "scopeSpans": [{"scope": {"name": "vllm.llm_engine"}, "spans": spans}]}]}) + "\n"


def opened(tmp_path: Path, *lines: str, map_file: Path | None = None):
    path = tmp_path / "spans.json"
    path.write_text("".join(lines))
    return open_inputs([("vllm-otlp", str(path))], map_file=map_file)


def rows(source, event: str, layer: str = "scheduler") -> pl.DataFrame:
    return source.frame.filter((pl.col("layer") == layer) & (pl.col("event") == event)).sort("request_id", "ts")


def notes(source) -> str:
    return " | ".join(source.provenance.sources[0].notes)


# --- the fixture -----------------------------------------------------------------------------


def test_fixture_gives_each_request_its_lifecycle_and_the_abort_a_drop(tmp_path):
    converted = convert([("vllm-otlp", str(FIXTURE))], tmp_path / "t.parquet")
    frame = pl.read_parquet(converted.output)
    sched = frame.filter(pl.col("layer") == "scheduler")
    counts = dict(sched.group_by("event").len().iter_rows())
    assert counts == {"arrive": 13, "dispatch": 12, "first_token": 12, "complete": 12, "drop": 1}
    aborted = sched.filter(pl.col("request_id") == "chatcmpl-19c7d3fe")
    assert aborted["event"].to_list() == ["arrive", "drop"]  # never scheduled: no dispatch, no token
    assert aborted.filter(pl.col("event") == "drop")["finish_reason"].item() == "abort"
    assert sched.filter(pl.col("event") == "complete")["finish_reason"].value_counts().sort("finish_reason").rows() == [("length", 1), ("stop", 11)]
    # int64 written as JSON numbers read like strings; base64 ids read like hex
    arrive = sched.filter(pl.col("event") == "arrive")
    assert arrive.filter(pl.col("request_id") == "chatcmpl-6b9e0d44").select("prompt_tokens", "output_tokens").row(0) == (330, 120)
    assert "chatcmpl-8f3a1c27" in arrive["request_id"].to_list()
    first = sched.filter(pl.col("request_id") == "chatcmpl-7d1e0c3a").sort("ts")
    offsets_ms = [(t - first["ts"][0]).total_seconds() * 1000 for t in first["ts"]]
    assert [round(x, 4) for x in offsets_ms] == [0, 2.1, 46.8, 1360.1]  # queue, ttft, e2e of the span
    assert converted.provenance.sources[0].unmapped == {"unmapped_record:name": 1}  # the API server's HTTP span


def test_the_fixture_is_recognised_as_arrivals_to_replay():
    table, use = read_arrivals(str(FIXTURE))
    assert use.name == "vllm-otlp" and len(table.arrival_ns) == 13
    assert list(table.arrival_ns) == sorted(table.arrival_ns) and table.prompt is not None


def test_child_spans_replace_the_derived_exec_rows_of_their_phase(tmp_path):
    source = open_inputs([("vllm-otlp", str(FIXTURE))])
    execs = rows(source, "exec", "gpu").filter(pl.col("request_id") == "chatcmpl-4b2f91aa").sort("ts")
    assert execs["phase"].to_list() == ["prefill", "decode"]
    assert execs["dur_ms"].to_list() == pytest.approx([173.3, 2701.2])
    assert execs["tokens"].null_count() == 2  # child spans carry no token counts; none is made up
    derived = rows(source, "exec", "gpu").filter(pl.col("request_id") == "chatcmpl-7d1e0c3a")
    assert derived["tokens"].to_list() == [412, 127] and derived["dur_ms"].to_list() == pytest.approx([41.2, 1310.5])


def test_map_supplies_the_device_that_resource_attributes_lack(tmp_path):
    without = open_inputs([("vllm-otlp", str(FIXTURE))])
    assert set(rows(without, "exec", "gpu")["host"]) == {"gpu-node-1"}
    assert "12 gpu exec rows dropped: no device known" in notes(without)
    mapped = open_inputs([("vllm-otlp", str(FIXTURE))], map_file=MAP)
    execs = rows(mapped, "exec", "gpu")
    assert set(execs["device"]) == {"gpu-node-1/GPU-0", "gpu-node-2/GPU-0"}
    assert set(execs.filter(pl.col("host") == "gpu-node-2")["pool"]) == {"chat-a100"}
    supplied = {(c.layer, c.column) for c in mapped.provenance.columns if c.status == "supplied"}
    assert {("gpu", "device"), ("gpu", "pool")} <= supplied
    assert "dropped" not in notes(mapped)


def test_without_any_device_or_host_no_exec_rows_and_gpu_is_absent(tmp_path):
    source = opened(tmp_path, line([request(1), request(2, start=T0 + 10**9)], resource={"service.name": "vllm"}))
    assert rows(source, "exec", "gpu").is_empty()
    assert "2 requests have no gpu exec rows" in notes(source)
    assert {c.status for c in source.provenance.columns if c.layer == "gpu"} == {"absent"}
    assert rows(source, "dispatch")["device"].null_count() == 2


def test_exec_rows_pending_a_device_the_map_does_not_give_are_dropped_and_gpu_is_absent(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("map:\n  device:\n    from: host\n    values: {other-node: gpu-7}\n")
    source = opened(tmp_path, line([request(1)], resource={"host.name": "node-9"}), map_file=mapping)
    assert set(source.frame["layer"]) == {"scheduler"}
    assert "2 gpu exec rows dropped: no device known" in notes(source)
    assert source.provenance.sources[0].rows == source.frame.height == 4
    assert {c.status for c in source.provenance.columns if c.layer == "gpu"} == {"absent"}


# --- clocks ----------------------------------------------------------------------------------


def test_instants_are_clamped_monotone_and_within_the_span_and_counted(tmp_path):
    source = opened(
        tmp_path,
        line([
            request(1, queue=0.2, ttft=0.05, e2e=1.0),  # monotonic queue time beyond the wall-clock TTFT
            request(2, start=T0 + 10**9, ttft=3.0, e2e=1.0),  # TTFT after the end
            {**request(3, start=T0 + 2 * 10**9, e2e=5.0), "endTimeUnixNano": str(T0 + 2 * 10**9 + 2 * 10**9)},  # e2e beyond the span end
        ]),
    )
    by = {rid: g.sort("ts") for (rid,), g in source.frame.filter(pl.col("layer") == "scheduler").group_by("request_id")}
    one = dict(zip(by["req-1"]["event"], by["req-1"]["ts"]))
    assert one["first_token"] == one["dispatch"] == T0 + 200_000_000
    two = dict(zip(by["req-2"]["event"], by["req-2"]["ts"]))
    assert two["first_token"] == two["complete"] == T0 + 10**9 + 1_000_200_000  # the span end
    three = dict(zip(by["req-3"]["event"], by["req-3"]["ts"]))
    assert three["complete"] == T0 + 4 * 10**9  # the span end
    for g in by.values():
        order = {e: i for i, e in enumerate(("arrive", "dispatch", "first_token", "complete"))}
        assert g.sort("ts")["event"].to_list() == sorted(g["event"].to_list(), key=order.__getitem__)
    assert "dispatch 0, first_token 2, complete/drop 1" in notes(source)
    decode = rows(source, "exec", "gpu").filter((pl.col("request_id") == "req-3") & (pl.col("phase") == "decode"))
    assert decode["ts"].item() + decode["dur_ms"].item() * 1e6 <= T0 + 4 * 10**9 + 1  # cut at the request's end


def test_unreached_steps_make_no_rows(tmp_path):
    source = opened(tmp_path, line([request(1, queue=-9123.4, ttft=0.0, prefill=0.0, decode=0.0, completion=0, finish=["abort"])]))
    assert source.frame["event"].to_list() == ["arrive", "drop"]
    assert "1 requests have no dispatch row" in notes(source) and "1 requests have no first_token row" in notes(source)


def test_decode_falls_back_on_inference_minus_prefill(tmp_path):
    source = opened(tmp_path, line([request(1, prefill=0.1, decode=None, **{"gen_ai.latency.time_in_model_inference": 0.9})]))
    decode = rows(source, "exec", "gpu").filter(pl.col("phase") == "decode")
    assert decode["dur_ms"].item() == pytest.approx(800.0)
    assert "1 decode spans from time_in_model_inference" in notes(source)


# --- ids, encodings, spellings ------------------------------------------------------------------


def test_ids_in_hex_or_base64_link_children_to_their_request(tmp_path):
    parent = request(7)
    parent["traceId"] = base64.b64encode(bytes.fromhex(parent["traceId"])).decode()
    parent["spanId"] = base64.b64encode(bytes.fromhex(parent["spanId"])).decode()
    child = span(70, start=T0 + 20_000_000, dur_s=0.01, name="prefill", parent=f"{7:016X}")  # upper-case hex
    child["traceId"] = f"{7:032x}"
    source = opened(tmp_path, line([parent, child]))
    prefill = rows(source, "exec", "gpu").filter(pl.col("phase") == "prefill")
    assert prefill["ts"].item() == T0 + 20_000_000 and prefill["dur_ms"].item() == pytest.approx(10.0)
    assert source.unmapped().is_empty()


def test_integers_as_strings_or_numbers_and_the_semconv_token_names(tmp_path):
    number = request(1)
    for a in number["attributes"]:
        if "intValue" in a["value"]:
            a["value"]["intValue"] = int(a["value"]["intValue"])
    number["startTimeUnixNano"] = int(number["startTimeUnixNano"])
    semconv = request(2, start=T0 + 10**9, prompt=None, completion=None, **{"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3})
    source = opened(tmp_path, line([number, semconv]))
    arrive = rows(source, "arrive")
    assert arrive.select("request_id", "prompt_tokens", "output_tokens").rows() == [("req-1", 100, 50), ("req-2", 7, 3)]
    assert arrive["ts"].to_list() == [T0, T0 + 10**9]


def test_finish_reasons_as_json_text_and_unknown_reasons(tmp_path):
    source = opened(
        tmp_path,
        line([
            request(1, finish='["abort"]'),  # vLLM forks set the JSON text of the list
            request(2, start=T0 + 10**9, finish="length"),
            request(3, start=T0 + 2 * 10**9, finish=["teleported"]),
        ]),
    )
    assert rows(source, "drop")["request_id"].to_list() == ["req-1"]
    assert rows(source, "complete")["request_id"].to_list() == ["req-2"]
    audit = source.unmapped().filter(pl.col("reason") == "unparsed_field")
    assert audit.select("column", "rows").rows() == [("gen_ai.response.finish_reasons", 1)]


def test_other_signals_and_other_spans_are_unmapped_warnings(tmp_path):
    metrics = json.dumps({"resourceMetrics": [{"resource": {}, "scopeMetrics": []}]}) + "\n"
    source = opened(tmp_path, metrics, line([request(1), span(2, name="GET /health")]))
    audit = source.unmapped().sort("column")
    assert audit.select("reason", "column", "rows", "warning").rows() == [
        ("unmapped_record", "name", 1, True), ("unmapped_record", "resourceSpans", 1, True),
    ]
    assert source.provenance.sources[0].records == 3


def test_a_span_without_its_request_id_is_set_aside(tmp_path):
    source = opened(tmp_path, line([request(1), request(2, start=T0 + 10**9, **{"gen_ai.request.id": None}), request(3, start=T0 + 2 * 10**9, ttft="fast")]))
    assert rows(source, "arrive")["request_id"].to_list() == ["req-1"]
    audit = source.unmapped().sort("column")
    assert audit.select("column", "example_rows").rows() == [("gen_ai.latency.time_to_first_token", [2]), ("gen_ai.request.id", [1])]


# --- bad input -------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> list[tuple[str, str, str]]:
    seconds = request(2, start=T0 + 10**9)
    seconds["startTimeUnixNano"] = "1748858401"
    ms_e2e = request(1, e2e=1500.0)
    ms_e2e["endTimeUnixNano"] = str(T0 + 1_500_200_000)
    cases = {
        "csv.json": ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n", "line 1", "OTLP-JSON"),
        "mooncake.json": ('{"timestamp": 0, "input_length": 5, "output_length": 3}\n', "line 1", "resourceSpans"),
        "http_only.json": (line([span(1, name="GET /health")]), "no llm_request span", "llm_request"),
        "no_ids.json": (line([request(1, **{"gen_ai.request.id": None})]), "record 1", "gen_ai.request.id"),
        "mixed_units.json": (line([request(1), seconds]), "record 2", "mixed units"),
        "e2e_in_ms.json": (line([ms_e2e]), "record 1", "seconds"),
        "spans_not_a_list.json": (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": {"a": 1}}]}]}) + "\n", "line 1", "spans"),
    }
    out = []
    for name, (body, where, expected) in cases.items():
        (tmp_path / name).write_text(body)
        out.append((name, where, expected))
    return out


def test_bad_input_exits_2_with_one_line_and_writes_nothing(run_cli, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, where, expected in _bad_files(inputs):
        out = tmp_path / "out" / "t.parquet"
        out.parent.mkdir(exist_ok=True)
        result = run_cli("convert", "--from", "vllm-otlp", inputs / name, "-o", out)
        message = result.stderr.strip()
        assert result.exit_code == 2, (name, message)
        assert message.count("\n") == 0, message
        assert str(inputs / name) in message and where in message and expected in message, (name, message)
        assert list(out.parent.iterdir()) == [] and not provenance_path(out).exists()


def test_library_error_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="not JSON"):
        opened(tmp_path, "not json at all\n")


# --- never invents a value ---------------------------------------------------------------------

latency = st.one_of(st.none(), st.floats(min_value=0.0001, max_value=30.0, allow_nan=False, allow_subnormal=False))
request_specs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3_600_000),  # arrival, ms after T0
        latency, latency, st.floats(min_value=0.001, max_value=60.0, allow_subnormal=False), latency, latency,  # queue, ttft, e2e, prefill, decode
        st.none() | st.integers(0, 100_000), st.none() | st.integers(0, 10_000),
        st.sampled_from([None, "stop", "length", "abort"]),
        st.booleans(),  # base64 ids
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_specs, st.sampled_from([NODE, {"host.name": "node-9"}, {}]))
def test_convert_never_invents_a_value(tmp_path_factory, specs, resource):
    tmp_path = tmp_path_factory.mktemp("otlp")
    spans = []
    for i, (at, queue, ttft, e2e, prefill, decode, prompt, completion, finish, b64) in enumerate(specs):
        s = request(i, start=T0 + at * 1_000_000, queue=queue, ttft=ttft, e2e=e2e, prefill=prefill, decode=decode,
                    prompt=prompt, completion=completion, finish=None if finish is None else [finish])
        if b64:
            s["traceId"] = base64.b64encode(bytes.fromhex(s["traceId"])).decode()
        spans.append(s)
    source = opened(tmp_path, line(spans, resource=resource))
    frame = source.frame
    given_ = {(c.layer, c.column) for c in source.provenance.columns if c.status != "absent"}
    for layer in set(frame["layer"]):
        part = frame.filter(pl.col("layer") == layer)
        for column in part.columns:
            if column in schema.COLUMNS and column != "layer" and part[column].null_count() < part.height:
                assert (layer, column) in given_, (layer, column)
    assert all(c.formula for c in source.provenance.columns if c.status == "derived")
    for row in frame.iter_rows(named=True):
        at, queue, ttft, e2e, prefill, decode, prompt, completion, finish, _ = specs[row["_record"]]
        start, end = T0 + at * 1_000_000, T0 + at * 1_000_000 + round((e2e + 0.0002) * 1e9)
        assert row["request_id"] == f"req-{row['_record']}"
        assert row["host"] == resource.get("host.name") and row.get("pool") is None
        assert start <= row["ts"] <= end
        if row["layer"] == "gpu":
            assert row["device"] == resource["coherence.device"]  # never a device the input does not name
            phase_s = prefill if row["phase"] == "prefill" else decode
            assert phase_s is not None and row["dur_ms"] <= phase_s * 1000 + 1e-6
            assert row["tokens"] == (prompt if row["phase"] == "prefill" else None if completion is None else max(completion - 1, 0))
            continue
        event = row["event"]
        expected = _instants(start, end, queue, ttft, e2e)
        if event == "arrive":
            assert row["ts"] == start and (row["prompt_tokens"], row["output_tokens"]) == (prompt, completion)
        elif event in ("dispatch", "first_token"):
            assert row["ts"] == expected[event]
            assert row["device"] == (resource.get("coherence.device") if event == "dispatch" else None)
        else:
            assert event == ("drop" if finish == "abort" else "complete")
            assert row["ts"] == expected["end"]
            assert row["finish_reason"] == finish and row["output_tokens"] == (None if finish == "abort" else completion)


def _instants(start: int, end: int, queue, ttft, e2e) -> dict[str, int | None]:
    """The documented derivation, written out independently: start + latency, raised to be
    monotone, lowered to the span end."""
    dispatch = None if queue is None else max(start + round(queue * 1e9), start)
    first = None if ttft is None else max(start + round(ttft * 1e9), dispatch or start)
    last = max(start + round(e2e * 1e9), first or dispatch or start)
    return {k: None if v is None else min(v, end) for k, v in (("dispatch", dispatch), ("first_token", first), ("end", last))}
