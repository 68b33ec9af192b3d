"""Replaying real arrival processes (Azure LLM CSV, Mooncake JSONL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from coherence_diag.errors import InputError
from coherence_diag.simulate import simulate

from .conftest import REAL_TRACES
from .sim_metrics import requests, trace_violations

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def make_azure(path: Path, n: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = datetime(2023, 11, 16, 18, 15, 0)
    offsets = np.sort(rng.uniform(0, 60, n))
    rows = pl.DataFrame(
        {
            "TIMESTAMP": [(t0 + timedelta(seconds=float(o))).strftime("%Y-%m-%d %H:%M:%S.%f") + "0" for o in offsets],
            "ContextTokens": rng.integers(50, 4000, n),
            "GeneratedTokens": rng.integers(0, 400, n),
        }
    )
    rows.write_csv(path)
    return rows.with_columns(offset_s=pl.Series(offsets))


def make_mooncake(path: Path, n: int = 200, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    ms = np.sort(rng.integers(0, 45_000, n))
    rows = [
        {"timestamp": int(t), "input_length": int(i), "output_length": int(o), "hash_ids": [1, 2]}
        for t, i, o in zip(ms, rng.integers(100, 20_000, n), rng.integers(1, 600, n))
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def first_arrivals(df: pl.DataFrame) -> pl.DataFrame:
    return requests(df).sort("t_arrive")


class TestAzureCsv:
    def test_times_and_tokens_come_from_the_file(self, tmp_path: Path) -> None:
        src = make_azure(tmp_path / "azure.csv")
        df = simulate("healthy", arrivals=tmp_path / "azure.csv")
        assert trace_violations(df) == []
        got = first_arrivals(df)
        assert got.height == src.height
        rel = (got["t_arrive"] - ORIGIN).dt.total_microseconds().to_numpy() / 1e6
        expected = src["offset_s"].to_numpy() - src["offset_s"].min()
        assert np.allclose(rel, expected, atol=1e-5)  # rebased to time_origin, 100-ns source resolution
        assert got["prompt_tokens"].to_list() == src["ContextTokens"].to_list()
        out = df.filter(pl.col("event") == "complete").join(got.select("request_id", "t_arrive"), on="request_id")
        src_out = dict(zip(got["request_id"], np.maximum(src["GeneratedTokens"].to_numpy(), 1)))
        assert all(src_out[r] == o for r, o in zip(out["request_id"], out["output_tokens"]))

    def test_duration_truncates(self, tmp_path: Path) -> None:
        src = make_azure(tmp_path / "azure.csv")
        df = simulate("healthy", arrivals=tmp_path / "azure.csv", duration_s=20)
        assert first_arrivals(df).height == int((src["offset_s"] - src["offset_s"].min() < 20).sum())

    def test_scale_speeds_up_the_replay(self, tmp_path: Path) -> None:
        make_azure(tmp_path / "azure.csv")
        slow = first_arrivals(simulate("healthy", arrivals=tmp_path / "azure.csv"))
        fast = first_arrivals(simulate("healthy", arrivals=tmp_path / "azure.csv", scale=2.0))
        span = lambda r: (r["t_arrive"].max() - r["t_arrive"].min()).total_seconds()  # noqa: E731
        assert span(fast) == pytest.approx(span(slow) / 2, rel=1e-6)


class TestMooncakeJsonl:
    def test_times_and_tokens_come_from_the_file(self, tmp_path: Path) -> None:
        rows = make_mooncake(tmp_path / "trace.jsonl")
        df = simulate("memory-path-incoherence", arrivals=tmp_path / "trace.jsonl")
        assert trace_violations(df) == []
        got = first_arrivals(df)
        assert got.height == len(rows)
        rel_ms = np.rint((got["t_arrive"] - ORIGIN).dt.total_microseconds().to_numpy() / 1e3)
        assert rel_ms.tolist() == [r["timestamp"] - rows[0]["timestamp"] for r in rows]
        assert got["prompt_tokens"].to_list() == [r["input_length"] for r in rows]

    def test_detected_by_content_without_suffix(self, tmp_path: Path) -> None:
        make_mooncake(tmp_path / "trace.data", n=50)
        assert first_arrivals(simulate("healthy", arrivals=tmp_path / "trace.data")).height == 50

    def test_fleet_is_sized_to_the_replayed_demand(self, tmp_path: Path) -> None:
        make_mooncake(tmp_path / "big.jsonl", n=400)
        df = simulate("healthy", arrivals=tmp_path / "big.jsonl")
        n_prefill = df.filter((pl.col("event") == "device_info") & pl.col("pool").str.starts_with("prefill")).height
        assert n_prefill > 2  # long Mooncake prompts need more prefill than the 2-device baseline


class TestBadFiles:
    def expect(self, path: Path, *fragments: str) -> None:
        with pytest.raises(InputError) as exc:
            simulate("healthy", arrivals=path)
        msg = str(exc.value)
        assert str(path) in msg
        for f in fragments:
            assert f in msg, msg

    def test_missing_file(self, tmp_path: Path) -> None:
        self.expect(tmp_path / "nope.csv", "not found", "TIMESTAMP,ContextTokens,GeneratedTokens")

    def test_wrong_columns(self, tmp_path: Path) -> None:
        (tmp_path / "x.csv").write_text("a,b\n1,2\n")
        self.expect(tmp_path / "x.csv", "unrecognized columns a,b", "input_length")

    def test_bad_timestamp(self, tmp_path: Path) -> None:
        (tmp_path / "x.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,5\n")
        self.expect(tmp_path / "x.csv", "TIMESTAMP")

    def test_non_numeric_tokens(self, tmp_path: Path) -> None:
        (tmp_path / "x.jsonl").write_text('{"timestamp": 0, "input_length": "many", "output_length": 3}\n')
        self.expect(tmp_path / "x.jsonl", "input_length")

    def test_negative_tokens(self, tmp_path: Path) -> None:
        (tmp_path / "x.jsonl").write_text('{"timestamp": 0, "input_length": -4, "output_length": 3}\n')
        self.expect(tmp_path / "x.jsonl", "negative")

    def test_empty_file(self, tmp_path: Path) -> None:
        (tmp_path / "x.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        self.expect(tmp_path / "x.csv", "no rows")

    def test_garbage(self, tmp_path: Path) -> None:
        (tmp_path / "x.jsonl").write_bytes(b"{not json\x00\xff")
        self.expect(tmp_path / "x.jsonl", "cannot be parsed")

    def test_directory(self, tmp_path: Path) -> None:
        self.expect(tmp_path, "not a regular file")


@pytest.mark.skipif(not REAL_TRACES.is_dir(), reason="shared real traces not available")
@pytest.mark.parametrize(
    "rel", ["azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "azure_llm_2023/AzureLLMInferenceTrace_code.csv", "mooncake_fast25/conversation_trace.jsonl"]
)
def test_real_traces_replay(rel: str) -> None:
    path = REAL_TRACES / rel
    df = simulate("healthy", arrivals=path, duration_s=120)
    assert trace_violations(df) == []
    got = first_arrivals(df)
    if path.suffix == ".csv":
        src = pl.read_csv(path).with_columns(pl.col("TIMESTAMP").str.to_datetime("%Y-%m-%d %H:%M:%S%.f"))
        rel_s = (src["TIMESTAMP"] - src["TIMESTAMP"].min()).dt.total_microseconds() / 1e6
    else:
        src = pl.read_ndjson(path)
        rel_s = (src["timestamp"] - src["timestamp"].min()) / 1e3
    assert got.height == int((rel_s < 120).sum())
