"""Request keys: every request id gets its own key, the same in every layer, and the request
table gives back the id text."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag import analysis, request_keys

REPO = Path(__file__).resolve().parents[1]
MS = 1_000_000
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "t.parquet"
    pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col("ts").cast(pl.Int64)).write_parquet(path)
    return path


def _request(rid: str, t_ms: float, exec_ms: float, device: str) -> list[dict]:
    ts = T0 + int(t_ms * MS)
    return [
        {"ts": ts, "layer": "scheduler", "event": "arrive", "request_id": rid, "slo_ms": 1000.0},
        {"ts": ts + 5 * MS, "layer": "scheduler", "event": "dispatch", "request_id": rid, "pool": "p", "device": device},
        {"ts": ts + 5 * MS, "layer": "gpu", "event": "exec", "request_id": rid, "device": device, "dur_ms": exec_ms, "phase": "prefill"},
        {"ts": ts + int((5 + exec_ms) * MS), "layer": "scheduler", "event": "complete", "request_id": rid},
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=200, unique=True))
def test_distinct_ids_get_distinct_keys(ids):
    keys = pl.DataFrame({"request_id": ids}).select(request_keys.hashed_key(pl.col("request_id")))[request_keys.KEY]
    assert keys.null_count() == 0
    assert keys.n_unique() == len(ids)


def test_a_null_id_has_a_null_key():
    keys = pl.DataFrame({"request_id": ["a", None]}).select(request_keys.hashed_key(pl.col("request_id")))
    assert keys[request_keys.KEY].to_list()[1] is None


def test_every_sample_request_keeps_its_own_key_and_id():
    path = REPO / "sample_traces" / "retry-amplification.parquet"
    requests = analysis.analyze(path).requests
    sched = analysis.read_trace(path).layers["scheduler"]  # the analysis keeps no id text in its layers (projection.py)
    assert requests.schema["request_id"] == pl.String
    assert requests.height == sched["request_id"].n_unique() == requests["request_key"].n_unique()
    pairs = sched.select("request_id", request_keys.KEY).unique()
    assert pairs.height == requests.height  # one key per id and one id per key


def test_keys_join_each_layer_to_its_own_request(tmp_path):
    # Ids that differ in one character: each request gets exactly its own execution time.
    rows = _request("r1", 0, 20.0, "g0") + _request("r2", 100, 70.0, "g1") + _request("r10", 200, 5.0, "g0")
    requests = analysis.analyze(_write(tmp_path, rows)).requests
    exec_ms = dict(zip(requests["request_id"], requests["exec_ms"]))
    assert exec_ms == {"r1": 20.0, "r2": 70.0, "r10": 5.0}
