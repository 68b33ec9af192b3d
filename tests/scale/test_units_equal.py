"""Work units, stitched and reduced, give exactly the single pass's tables: the request table,
the device table, and validation's counters and audit (and its --max-bad-fraction verdict),
on every sample trace split into small slices, on generated traces with requests crossing
slice edges, and on a Dask LocalCluster as in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from coherence_diag import ingest, paths, validate
from coherence_diag.errors import InputError, TraceError
from coherence_diag.projection import project_layers
from coherence_diag.request_keys import KEY
from coherence_diag.scale.executors import executor
from coherence_diag.scale.reduce import Reduced, run_units
from coherence_diag.scale.slices import RowFilter, SliceSource
from coherence_diag.summary import summarize

SAMPLES = sorted(Path(__file__).resolve().parents[2].glob("sample_traces/*.parquet"))
S = 1_000_000_000
MS = 1_000_000
T0 = 1_767_225_600 * S  # on every window grid
ONE_BYTE = 1  # a budget no window fits: one window per unit



def single_pass(path: Path | str, max_bad_fraction: float = 1.0) -> Reduced:
    trace = validate.validate(ingest.open_trace(path), max_bad_fraction=max_bad_fraction)
    return Reduced(
        requests=paths.request_paths(trace.layers).sort(KEY),
        devices=paths.device_table(trace.layers.get("gpu")).collect().sort(pl.col("device").cast(pl.String)),
        rows_total=trace.rows_total,
        rows_by_layer=trace.rows_by_layer,
        usable_by_layer={layer: frame.height for layer, frame in trace.layers.items()},
        audit=trace.audit,
        plan=None,  # type: ignore[arg-type]
        crossing_requests=0,
    )


def assert_same(units: Reduced, single: Reduced) -> None:
    """Exactly equal, to the last bit of every float."""
    assert_frame_equal(units.requests, single.requests, check_exact=True)
    assert_frame_equal(units.devices, single.devices, check_exact=True)
    assert_frame_equal(units.audit, single.audit, check_exact=True)
    assert (units.rows_total, units.rows_by_layer, units.usable_by_layer) == (single.rows_total, single.rows_by_layer, single.usable_by_layer)
    assert list(units.rows_by_layer) == list(single.rows_by_layer)  # and in the same order


# --- the shipped samples, in slices of one window --------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_split_into_one_window_units_reduces_to_the_single_pass(path):
    units = run_units(path, budget_bytes=ONE_BYTE, window_s=60.0, max_bad_fraction=1.0, with_layers=True)
    assert len(units.plan.units) >= 5 and units.crossing_requests > 0
    assert units.layers.spilled  # the analysis's tables went through disk (scale/spill.py)
    spill_path = units.layers.spill_path
    assert spill_path is not None and not (spill_path / "parts").exists()  # parts removed once gathered
    # One directory per layer, and the units' request id rows, read only when asked for.
    assert {p.name for p in spill_path.iterdir()} == set(units.layers) | {"ids", "owner"}
    # With the layers, the request table comes in the single pass's order (paths.LEADING_ORDER).
    assert_frame_equal(units.requests, units.requests.sort(KEY).sort(paths.LEADING_ORDER, maintain_order=True), check_exact=True)
    units.requests = units.requests.sort(KEY)
    assert_same(units, single_pass(path))
    # The layers the analysis reads after the paths, and what it takes of every row before.
    trace = validate.validate(ingest.open_trace(path), max_bad_fraction=1.0)
    projected = project_layers(trace.layers)
    assert list(units.layers) == list(projected)
    for layer, frame in projected.items():
        assert_frame_equal(units.layers[layer], frame, check_exact=True)
    whole = summarize(trace.layers, paths.request_paths(trace.layers))
    assert units.summary is not None
    assert (units.summary.span, units.summary.envs) == (whole.span, whole.envs)
    assert isinstance(units.summary.request_ids, pl.LazyFrame)  # on disk (spill.Spill.take)
    assert_frame_equal(units.summary.request_ids.sort(KEY).collect(), whole.request_ids.sort(KEY))


# --- generated traces --------------------------------------------------------------------------

DEVICES = {"gpu-0": "host-a", "gpu-1": "host-b", "gpu-2": "host-b"}
EDGES_MS = [k * 1000 + d for k in range(1, 4) for d in (-1, 0)]  # just before, and on, a slice edge


@st.composite
def traces(draw) -> pl.DataFrame:
    rows: list[dict] = list(BACKGROUND)
    at_ms = st.one_of(st.integers(0, 3999), st.sampled_from(EDGES_MS))
    gap_ms = st.integers(0, 1500)
    for i in range(draw(st.integers(1, 7))):
        rid = f"req-{i}"
        arrive = t = T0 + draw(at_ms) * MS
        attempt = 0
        rows.append({"layer": "scheduler", "event": "arrive", "ts": t, "request_id": rid, "attempt": 0, "pool": "p", "slo_ms": 900.0,
                     "prompt_tokens": draw(st.integers(1, 500)), "workload_class": draw(st.sampled_from(["inference", "batch"])), "priority": 1})
        for _ in range(draw(st.integers(0, 2))):  # a timeout or drop, then a retry, rows after a terminal event
            t += draw(gap_ms) * MS
            rows.append({"layer": "scheduler", "event": draw(st.sampled_from(["timeout", "drop"])), "ts": t, "request_id": rid, "attempt": attempt})
            t += draw(gap_ms) * MS
            attempt += 1
            rows.append({"layer": "scheduler", "event": "retry", "ts": t, "request_id": rid, "attempt": attempt})
            if draw(st.booleans()):
                rows.append({"layer": "scheduler", "event": "arrive", "ts": t, "request_id": rid, "attempt": attempt})
        if draw(st.booleans()):
            device = draw(st.sampled_from(sorted(DEVICES)))
            t += draw(gap_ms) * MS
            rows.append({"layer": "scheduler", "event": "dispatch", "ts": t, "request_id": rid, "attempt": attempt, "device": device,
                         "pool": "p", "predicted_ms": 12.5})
            rows.append({"layer": "gpu", "event": "exec", "ts": t, "request_id": rid, "device": device, "dur_ms": draw(st.floats(0.1, 900.0)),
                         "phase": "prefill"})
            if draw(st.booleans()):  # disaggregated: KV transfer, decode dispatch and span
                decode = draw(st.sampled_from(sorted(DEVICES)))
                t += draw(gap_ms) * MS
                rows.append({"layer": "network", "event": "transfer", "ts": t, "request_id": rid, "dur_ms": 3.25, "bytes": 1000,
                             "kind": "kv_transfer", "src_device": device, "dst_device": decode})
                t += draw(gap_ms) * MS
                rows.append({"layer": "scheduler", "event": "dispatch", "ts": t, "request_id": rid, "attempt": attempt, "device": decode,
                             "pool": "d"})
                rows.append({"layer": "gpu", "event": "exec", "ts": t, "request_id": rid, "device": decode, "dur_ms": 40.0, "phase": "decode"})
            rows.append({"layer": "scheduler", "event": "first_token", "ts": t + MS, "request_id": rid, "attempt": attempt})
        end = draw(st.sampled_from(["complete", "complete", "timeout", "drop", None, "complete_before_arrival"]))
        if end == "complete_before_arrival":
            rows.append({"layer": "scheduler", "event": "complete", "ts": arrive - draw(st.integers(1, 1500)) * MS, "request_id": rid})
        elif end is not None:
            rows.append({"layer": "scheduler", "event": end, "ts": t + draw(gap_ms) * MS, "request_id": rid, "attempt": attempt,
                         "output_tokens": 7})
    for device, host in DEVICES.items():
        for at in draw(st.lists(at_ms, min_size=0, max_size=2, unique=True)):  # none, or seen twice
            rows.append({"layer": "gpu", "event": "device_info", "ts": T0 + at * MS, "device": device, "host": host,
                         "pool": draw(st.sampled_from(["p", "d"])), "accelerator": draw(st.sampled_from(["H100", "L40S"])),
                         "virtualized": draw(st.booleans())})
    for host in sorted(set(DEVICES.values())):  # tied times too: the as-of join takes the last in trace order
        for at in draw(st.lists(at_ms, max_size=6)):
            rows.append({"layer": "hypervisor", "event": "sample", "ts": T0 + at * MS, "host": host, "steal_frac": draw(st.floats(0, 1))})
    for at in draw(st.lists(at_ms, max_size=3)):
        rows.append({"layer": "gpu", "event": "sample", "ts": T0 + at * MS, "device": "gpu-0", "gpu_util": draw(st.sampled_from([0.5, 1.5]))})
    rows += draw(st.lists(st.sampled_from([
        {"layer": "bogus", "event": "x", "ts": T0 + 1000 * MS},  # unknown layer
        {"layer": "queue", "event": "sample", "ts": None, "queue": "q", "depth": 1},  # no timestamp
        {"layer": "scheduler", "event": "arrive", "ts": None, "request_id": "req-0"},
        {"layer": "gpu", "event": "exec", "ts": T0 + 2000 * MS, "request_id": "req-1", "device": "gpu-1", "dur_ms": -1.0},  # bad duration
    ]), max_size=3))
    # exact duplicates (on slice edges among them), then any order
    rows += [dict(rows[i]) for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=4))]
    order = draw(st.permutations(range(len(rows))))
    return pl.DataFrame([rows[i] for i in order], schema=_SCHEMA)


def _background() -> list[dict]:
    """Requests inside every 1 s unit and crossing each edge, whatever else is drawn."""
    rows = []
    for name, start_ms, end_ms in [(f"in-{k}-{j}", k * 1000 + 100 + j, k * 1000 + 600 + j) for k in range(4) for j in range(3)] + [
        (f"across-{k}-{j}", k * 1000 + 900 + j, k * 1000 + 1100 + j) for k in range(4) for j in range(3)
    ]:
        t, end = T0 + start_ms * MS, T0 + end_ms * MS
        rows += [
            {"layer": "scheduler", "event": "arrive", "ts": t, "request_id": name, "attempt": 0, "pool": "p", "slo_ms": 400.0},
            {"layer": "scheduler", "event": "dispatch", "ts": t + MS, "request_id": name, "attempt": 0, "device": "gpu-1", "pool": "p"},
            {"layer": "gpu", "event": "exec", "ts": t + MS, "request_id": name, "device": "gpu-1", "dur_ms": 0.1, "phase": "prefill"},
            {"layer": "scheduler", "event": "complete", "ts": end, "request_id": name, "attempt": 0},
        ]
    return rows


BACKGROUND = _background()

_SCHEMA = {
    "ts": pl.Int64, "layer": pl.String, "event": pl.String, "request_id": pl.String, "host": pl.String, "device": pl.String,
    "pool": pl.String, "priority": pl.Int64, "workload_class": pl.String, "slo_ms": pl.Float64, "predicted_ms": pl.Float64,
    "prompt_tokens": pl.Int64, "output_tokens": pl.Int64, "attempt": pl.Int64, "queue": pl.String, "depth": pl.Int64,
    "dur_ms": pl.Float64, "phase": pl.String, "gpu_util": pl.Float64, "accelerator": pl.String, "virtualized": pl.Boolean,
    "src_device": pl.String, "dst_device": pl.String, "bytes": pl.Int64, "kind": pl.String, "steal_frac": pl.Float64,
}

# How `ts` is stored: the slices' Parquet predicates convert their bounds to each.
TS_TYPES = [pl.Datetime("ns", "UTC"), pl.Datetime("us"), pl.Int64]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(traces(), st.sampled_from(TS_TYPES), st.sampled_from([3, 16, 1000]))
def test_generated_traces_with_requests_crossing_slice_edges_reduce_to_the_single_pass(tmp_path, frame, ts_type, row_group_rows):
    path = tmp_path / "trace.parquet"
    stored = pl.col("ts") if ts_type == pl.Int64 else pl.col("ts").cast(pl.Datetime("ns")).cast(ts_type)
    frame.with_columns(stored).write_parquet(path, row_group_size=row_group_rows, statistics=True)
    units = run_units(path, budget_bytes=ONE_BYTE, window_s=1.0, max_bad_fraction=1.0)
    assert_same(units, single_pass(path))
    # --max-bad-fraction is checked on the summed counters (as run_units does): same verdict, same message
    try:
        single_pass(path, max_bad_fraction=0.0)
        single_error = None
    except TraceError as exc:
        single_error = str(exc)
    try:
        validate.enforce_budget(units.audit, units.rows_total, sum(units.usable_by_layer.values()), str(path), 0.0)
        units_error = None
    except TraceError as exc:
        units_error = str(exc)
    assert units_error == single_error


def test_a_request_crossing_an_edge_is_stitched_with_the_look_back_steal_sample(tmp_path):
    """Arrival in one unit, dispatch and completion in the next; its host's steal sample 30 s
    before the dispatch lies in neither unit's slice."""
    rows = [
        {"layer": "gpu", "event": "device_info", "ts": T0, "device": "gpu-1", "host": "host-b", "pool": "p"},
        {"layer": "hypervisor", "event": "sample", "ts": T0 + 40 * S, "host": "host-b", "steal_frac": 0.25},
        {"layer": "scheduler", "event": "arrive", "ts": T0 + 69 * S, "request_id": "r", "attempt": 0},
        {"layer": "scheduler", "event": "dispatch", "ts": T0 + 70 * S + 5 * MS, "request_id": "r", "attempt": 0, "device": "gpu-1"},
        {"layer": "scheduler", "event": "complete", "ts": T0 + 71 * S, "request_id": "r", "attempt": 0},
        {"layer": "scheduler", "event": "arrive", "ts": T0 + 72 * S, "request_id": "inside", "attempt": 0},
        {"layer": "scheduler", "event": "dispatch", "ts": T0 + 72 * S + 1, "request_id": "inside", "attempt": 0, "device": "gpu-1"},
    ]
    path = tmp_path / "t.parquet"
    pl.DataFrame(rows, schema=_SCHEMA).write_parquet(path)
    units = run_units(path, budget_bytes=ONE_BYTE, window_s=1.0)
    assert units.crossing_requests == 1
    assert units.requests["steal_frac_at_dispatch"].to_list() == [0.25, 0.25]
    assert_same(units, single_pass(path, max_bad_fraction=validate.DEFAULT_MAX_BAD_FRACTION))


# Polars divides a column by a scalar with a reciprocal multiply, except on one- or two-row
# columns: a division in paths.py gave 0.1 in a tiny unit against 0.09999999999999999 in the whole
# trace. paths.py multiplies by MS_PER_NS instead, the same bits at every length.
def test_a_request_alone_in_its_unit_has_the_single_pass_bits(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame(BACKGROUND[:4] + BACKGROUND[4 * 12: 4 * 12 + 4], schema=_SCHEMA).write_parquet(path)  # one inside, one across
    assert_same(run_units(path, budget_bytes=ONE_BYTE, window_s=1.0), single_pass(path, max_bad_fraction=0.01))


# --- slices --------------------------------------------------------------------------------------


def test_a_slice_reads_only_the_row_groups_its_time_and_layer_need(tmp_path):
    """The slice's predicates reach the Parquet scan (row-group statistics), not only a filter
    after the casts; and the slice holds exactly the rows of its span."""
    frame = pl.DataFrame({"ts": [T0 + i * S for i in range(100)], "layer": ["scheduler"] * 50 + ["hypervisor"] * 50,
                          "event": ["arrive"] * 50 + ["sample"] * 50, "request_id": [f"r{i}" for i in range(100)]})
    path = tmp_path / "t.parquet"
    frame.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")).cast(pl.Datetime("ms", "UTC"))).write_parquet(path, row_group_size=10, statistics=True)
    source = SliceSource(ingest.open_trace(path), RowFilter(spans=((T0 + 55 * S + 1, T0 + 60 * S),), layers=("hypervisor",)))
    plan = source.scan().explain()
    scan = plan[plan.index("Parquet SCAN"):]
    selection = next(line for line in scan.splitlines() if "SELECTION" in line)
    assert '"ts"' in selection and '"layer"' in selection
    got = source.scan().collect()
    assert got["ts"].to_list() == [T0 + i * S for i in range(56, 60)]
    assert got["_record"].to_list() == list(range(56, 60))  # the row in the file, not in the slice


# --- executors -------------------------------------------------------------------------------


def test_an_unknown_scheduler_is_an_input_error():
    with pytest.raises(InputError, match="local"), executor("loca1"):
        pass


def test_a_scheduler_without_dask_installed_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"coherence-diag\[dask\]"), executor("local"):
        pass


@pytest.fixture(scope="module")
def local_cluster():
    pytest.importorskip("distributed")
    with executor("local", workers=2) as run:
        yield run


def test_a_dask_local_cluster_gives_what_in_process_gives(local_cluster):
    path = next(p for p in SAMPLES if p.stem == "retry-amplification")
    on_cluster = run_units(path, budget_bytes=ONE_BYTE, window_s=60.0, executor=local_cluster)
    assert_same(on_cluster, run_units(path, budget_bytes=ONE_BYTE, window_s=60.0))
    assert on_cluster.crossing_requests > 0


def test_local_cluster_workers_run_polars_on_one_thread(local_cluster):
    threads = local_cluster.client.run(lambda: __import__("polars").thread_pool_size())
    assert len(threads) == 2 and set(threads.values()) == {1}


def test_a_trace_missing_a_required_column_raises_the_single_pass_error(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"ts": [T0, T0 + 5 * S], "layer": ["gpu", "network"], "event": ["exec", "sample"], "dur_ms": [1.0, 1.0]}).write_parquet(path)
    with pytest.raises(TraceError) as single_error:
        single_pass(path)
    with pytest.raises(TraceError) as units_error:
        run_units(path, budget_bytes=ONE_BYTE, window_s=1.0)
    assert str(units_error.value) == str(single_error.value) and "2 problems" in str(single_error.value)
