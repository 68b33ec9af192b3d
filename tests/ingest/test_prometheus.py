"""The `prometheus` source: text snapshots and query_range JSON become queue and gpu samples whose
every value is an input sample's value (or its documented conversion); counters and latency
histograms become provenance summaries, never rows; times come from one stated source or the
file is refused."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import schema
from coherence_diag.convert import open_inputs
from coherence_diag.errors import TraceError
from coherence_diag.ingest.prom_read import counter_increase
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "prometheus"
START_S = 1_714_564_800
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _open(tmp_path, name: str, body: str, **kw):
    path = tmp_path / name
    path.write_text(body)
    return open_inputs([("prometheus", str(path))], **kw)


def _given(source) -> set[tuple[str, str]]:
    return {(c.layer, c.column) for c in source.provenance.columns if c.status != "absent"}


# --- values are the samples' values --------------------------------------------------------------

engines = st.lists(
    st.tuples(st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=500), st.floats(min_value=0, max_value=1)),
    min_size=1, max_size=6,
)


@SETTINGS
@given(engines, st.lists(st.integers(min_value=0, max_value=3600), min_size=1, max_size=4, unique=True))
def test_snapshot_values_are_the_samples_values(tmp_path_factory, values, offsets):
    tmp_path = tmp_path_factory.mktemp("snap")
    blocks = []
    for offset in offsets:
        lines = [f"# ts={START_S + offset}"]
        for i, (waiting, running, kv) in enumerate(values):
            labels = f'engine="{i}",model_name="m"'
            lines += [
                f"vllm:num_requests_waiting{{{labels}}} {waiting}",
                f"vllm:num_requests_running{{{labels}}} {running}",
                f"vllm:kv_cache_usage_perc{{{labels}}} {kv!r}",
            ]
        blocks.append("\n".join(lines))
    source = _open(tmp_path, "snap.prom", "\n".join(blocks) + "\n")
    frame = source.scan().collect()
    # Every non-null schema column is one the provenance says the source gives.
    for layer in ("queue", "gpu"):
        rows = frame.filter(pl.col("layer") == layer)
        for column in rows.columns:
            if column in schema.LAYER_COLUMNS[layer] and rows[column].null_count() < rows.height:
                assert (layer, column) in _given(source), (layer, column)
    queue = frame.filter(pl.col("layer") == "queue")
    gpu = frame.filter(pl.col("layer") == "gpu")
    assert queue.height == gpu.height == len(values) * len(offsets)
    for row in queue.iter_rows(named=True):
        i = int(row["queue"].rsplit("=", 1)[1])
        assert (row["depth"], row["running_requests"]) == values[i][:2]
        assert (row["ts"] // 10**9 - START_S) in offsets
    for row in gpu.iter_rows(named=True):
        assert row["kv_cache_util"] == values[int(row["device"].rsplit("=", 1)[1])][2]


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=99)), min_size=1, max_size=30, unique_by=lambda x: x[0]))
def test_query_range_values_and_float_second_times_are_kept(tmp_path_factory, points):
    tmp_path = tmp_path_factory.mktemp("qr")
    values = [[f"{START_S + t / 1000:.3f}", str(v)] for t, v in points]
    doc = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "sglang:num_queue_reqs", "instance": "h:30000"}, "values": values},
    ]}}
    frame = _open(tmp_path, "qr.json", json.dumps(doc)).scan().collect()
    assert frame.height == len(points)
    got = sorted(zip(frame["ts"].to_list(), frame["depth"].to_list()))
    assert got == sorted(((START_S * 1000 + t) * 10**6, v) for t, v in points)
    assert set(frame["queue"]) == {"h:30000"}


def test_query_range_string_values_nan_and_inf_are_set_aside_not_zero(tmp_path):
    doc = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "vllm:kv_cache_usage_perc", "instance": "a"}, "values": [[START_S, "0.5"], [START_S + 15, "NaN"], [START_S + 30, "+Inf"]]},
    ]}}
    source = _open(tmp_path, "q.json", json.dumps(doc))
    frame = source.scan().collect()
    assert frame["kv_cache_util"].to_list() == [0.5]
    assert int(source.unmapped()["rows"].sum()) == 2


# --- counters and histograms: summaries, never rows ---------------------------------------------


def test_counter_increase_reads_a_drop_as_a_restart():
    frame = pl.DataFrame({"s": ["a"] * 5, "t": [1, 2, 3, 4, 5], "v": [10.0, 14.0, 19.0, 2.0, 5.0]})
    assert frame.select(counter_increase("v", ["s"], "t").alias("d"))["d"].to_list() == [None, 4.0, 5.0, 2.0, 3.0]


def test_fixture_histograms_and_preemptions_are_summaries_with_their_buckets():
    source = open_inputs([("prometheus", str(FIXTURES / "vllm_snapshots.prom"))])
    frame = source.scan().collect()
    assert set(frame["layer"]) == {"queue", "gpu"}  # no scheduler rows: no request is invented
    use = source.provenance.sources[0]
    counters = {m.series: m for m in use.summaries if m.kind == "counter"}
    # engine 0: 0 -> 2 -> (restart) 1 -> 1: increases 2 + 1 + 0
    engine0 = next(m for s, m in counters.items() if "engine=0" in s)
    assert (engine0.count, engine0.resets) == (3.0, 1)
    ttft = next(m for m in use.summaries if m.metric == "vllm:time_to_first_token_seconds" and "engine=0" in m.series)
    assert ttft.count == 9.0  # 4 + 2 + 3 observations after the first scrape (the restart's 2 counted as new)
    assert set(ttft.quantiles) == {"p50", "p95", "p99"}
    for q, value in ttft.quantiles.items():
        low, high = (float(x) for x in ttft.quantile_buckets[q].strip("(]").split(", "))
        assert low <= value <= high
    assert any("histogram estimates" in n for n in use.notes)


def test_a_single_snapshot_at_start_gives_cumulative_summaries(tmp_path):
    body = (
        '# TYPE vllm:e2e_request_latency_seconds histogram\n'
        'vllm:e2e_request_latency_seconds_bucket{le="1.0"} 3.0\n'
        'vllm:e2e_request_latency_seconds_bucket{le="2.0"} 7.0\n'
        'vllm:e2e_request_latency_seconds_bucket{le="+Inf"} 8.0\n'
        'vllm:e2e_request_latency_seconds_sum 11.0\nvllm:e2e_request_latency_seconds_count 8.0\n'
        'vllm:num_requests_waiting{engine="0"} 4.0\n'
    )
    source = _open(tmp_path, "one.prom", body, start="2024-05-01T12:00:00Z")
    assert source.scan().collect()["ts"].to_list() == [START_S * 10**9]
    (m,) = source.provenance.sources[0].summaries
    assert m.cumulative and m.count == 8.0 and m.mean == pytest.approx(11 / 8)
    assert m.quantiles["p50"] == pytest.approx(1.0 + (4.0 - 3.0) / 4.0)  # rank 4 of 8 in (1, 2]
    assert m.quantiles["p99"] == 2.0 and m.quantile_buckets["p99"] == "(2.0, +Inf]"  # the highest finite bound


# --- times ---------------------------------------------------------------------------------------


def test_sample_timestamps_are_milliseconds(tmp_path):
    source = _open(tmp_path, "t.prom", 'vllm:num_requests_waiting{engine="0"} 4 1714564800123\n')
    assert source.scan().collect()["ts"].to_list() == [1_714_564_800_123 * 10**6]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('vllm:num_requests_waiting{engine="0"} 4\n', "--start TIME"),
        ('vllm:num_requests_waiting{engine="0"} 4 1714564800123\nvllm:num_requests_waiting{engine="1"} 4\n', "record 2"),
        ('vllm:num_requests_waiting{engine="0"} 4 1714564800123\nvllm:num_requests_waiting{engine="1"} 4 1714564800\n', "mixed units"),
        ('vllm:num_requests_waiting{engine="0"} 4\n# ts=1714564800\nvllm:num_requests_waiting{engine="0"} 5\n', "before the first `# ts=`"),
        ('# ts=1714564800000\nvllm:num_requests_waiting{engine="0"} 5\n', "milliseconds?"),
        ('# ts=yesterday\nvllm:num_requests_waiting{engine="0"} 5\n', "not a time"),
    ],
)
def test_a_snapshot_without_one_clear_time_source_is_refused(tmp_path, body, expected):
    with pytest.raises(TraceError, match="t.prom") as info:
        _open(tmp_path, "t.prom", body)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_rfc3339_separators_and_the_map_gives_pools_from_extra_labels(tmp_path):
    body = '# ts=2024-05-01T12:00:00Z\nvllm:num_requests_waiting{engine="0",pod="chat-1"} 4\n'
    mapping = tmp_path / "map.yaml"
    mapping.write_text("map:\n  pool:\n    from: pod\n    values: {chat-1: chat}\n")
    frame = _open(tmp_path, "t.prom", body, map_file=mapping).scan().collect()
    assert frame["ts"].to_list() == [START_S * 10**9]
    assert frame["pool"].to_list() == ["chat"] and frame["queue"].to_list() == ["chat-1/engine=0"]


def test_query_range_fixture_maps_vllm_and_sglang_engines():
    source = open_inputs([("prometheus", str(FIXTURES / "query_range.json"))])
    frame = source.scan().collect()
    queues = set(frame.filter(pl.col("layer") == "queue")["queue"])
    assert queues == {"10.0.3.7:8000/engine=0", "10.0.3.9:30000/tp_rank=0"}
    assert frame.filter(pl.col("layer") == "gpu")["kv_cache_util"].max() <= 1.0
    kinds = {m.metric: m.kind for m in source.provenance.sources[0].summaries}
    assert kinds == {"vllm:num_preemptions_total": "counter", "vllm:time_to_first_token_seconds": "histogram"}
