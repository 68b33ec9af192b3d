"""`convert` never invents a value: every non-null schema column of the output traces back to an
input field of its record, or to a documented derivation (provenance `derived`, with its formula).
Hypothesis draws records in each request source's shape; each output row is matched to its record
by the derived request id (`<file stem>#<record number>`)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import schema
from coherence_diag.convert import open_inputs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
START = datetime(2023, 11, 16, 18, 0, tzinfo=UTC)
tokens = st.integers(min_value=0, max_value=200_000)
records = st.lists(st.tuples(st.integers(min_value=0, max_value=3_600 * 10**7), tokens, tokens), min_size=1, max_size=40)


def _rows(tmp_path, name: str, body: str) -> pl.DataFrame:
    path = tmp_path / name
    path.write_text(body)
    source = open_inputs([(SOURCE_OF[name], str(path))])
    frame = source.scan().collect()
    # Every non-null schema column must be one the provenance says a source gives.
    given = {(c.layer, c.column) for c in source.provenance.columns if c.status != "absent"}
    for column in frame.columns:
        if column in schema.COLUMNS and column != "layer" and frame[column].null_count() < frame.height:
            assert ("scheduler", column) in given, column
    formulas = {c.column: c.formula for c in source.provenance.columns if c.status == "derived"}
    assert all(formulas[c] for c in formulas)  # every derivation states its formula
    return frame.with_columns(pl.col("request_id").str.split("#").list.last().cast(pl.Int64).sub(1).alias("n"))


SOURCE_OF = {"azure.csv": "azure-llm", "mooncake.jsonl": "mooncake", "burst.csv": "burstgpt"}


@SETTINGS
@given(records)
def test_azure_llm_values_are_the_records_values(tmp_path_factory, recs):
    tmp_path = tmp_path_factory.mktemp("azure")
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for ticks, p, o in recs:  # ticks of 100 ns: the file's 7 fractional digits
        moment = START + timedelta(microseconds=ticks // 10)
        lines.append(f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond:06d}{ticks % 10},{p},{o}")
    frame = _rows(tmp_path, "azure.csv", "\n".join(lines) + "\n")
    assert frame.height == len(recs)
    for row in frame.iter_rows(named=True):
        ticks, p, o = recs[row["n"]]
        assert row["ts"] == int(START.timestamp()) * 10**9 + ticks * 100
        assert (row["prompt_tokens"], row["output_tokens"]) == (p, o)
        assert row["event"] == "arrive"


@SETTINGS
@given(records)
def test_mooncake_values_are_the_records_values(tmp_path_factory, recs):
    tmp_path = tmp_path_factory.mktemp("mooncake")
    body = "".join(json.dumps({"timestamp": t // 10**4, "input_length": p, "output_length": o, "hash_ids": [1, 2]}) + "\n" for t, p, o in recs)
    frame = _rows(tmp_path, "mooncake.jsonl", body)
    assert frame.height == len(recs)
    for row in frame.iter_rows(named=True):
        t, p, o = recs[row["n"]]
        assert row["ts"] == (t // 10**4) * 10**6
        assert (row["prompt_tokens"], row["output_tokens"]) == (p, o)


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), tokens, tokens, st.sampled_from(["Conversation log", "API log"])), min_size=1, max_size=40))
def test_burstgpt_values_are_the_records_values_and_failures_get_none(tmp_path_factory, recs):
    tmp_path = tmp_path_factory.mktemp("burst")
    lines = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    lines += [f"{t},ChatGPT,{p},{o},{p + o},{kind}" for t, p, o, kind in recs]
    frame = _rows(tmp_path, "burst.csv", "\n".join(lines) + "\n")
    assert frame.height == len(recs)
    for row in frame.iter_rows(named=True):
        t, p, o, kind = recs[row["n"]]
        assert row["ts"] == t * 10**9 and row["prompt_tokens"] == p
        assert row.get("output_tokens") == (o if o > 0 else None) and row["failed"] == (o == 0)
        assert row["log_type"] == kind


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=20), st.floats(min_value=0, max_value=100, allow_subnormal=False), st.integers(0, 2)), min_size=1, max_size=30))
def test_gentd26_duty_cycle_is_the_records_percent_over_100(tmp_path_factory, recs):
    tmp_path = tmp_path_factory.mktemp("gentd26")
    path = tmp_path / "pod_gpu_duty_cycle_anon.csv"
    path.write_text("value,timestamp_anon,container_ip\n" + "".join(f"{v!r},{1662858720 + 57 * k}.0,c{c}\n" for k, v, c in recs))
    source = open_inputs([("alibaba-gentd26", str(path))])
    frame = source.scan().collect()
    assert frame.height == len(recs)
    for row in frame.iter_rows(named=True):
        k, v, c = recs[row["_record"]]
        assert math.isclose(row["gpu_util"], v / 100, rel_tol=1e-14, abs_tol=1e-300)  # text -> float may differ by an ulp
        assert row["device"] == f"c{c}" and row["ts"] == (1662858720 + 57 * k) * 10**9
        assert {col for col in frame.columns if col in schema.COLUMNS and row[col] is not None} == {"ts", "layer", "event", "device", "gpu_util"}
