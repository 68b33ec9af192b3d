"""A layer read from disk (layer_store.SpilledLayer, written by work units: scale/spill.py) or kept
in memory split by event (layer_store.EventParts) gives the same frame as the layer in memory, for
any columns and events asked for; the spill directory goes away with the last Layers that refers
to it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from coherence_diag.errors import InputError
from coherence_diag.layer_store import (
    OWNER_FILE,
    SPILL_PREFIX,
    EventParts,
    Layers,
    SpillDirectory,
    SpilledLayer,
    remove_abandoned,
    spill_errors,
)

EVENTS = ["exec", "sample", "device_info"]
COLUMNS = ["ts", "event", "device", "dur_ms", "gpu_util", "env", "attempt"]


@st.composite
def layers(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 40))
    constant_env = draw(st.booleans())
    return pl.DataFrame(
        {
            "ts": draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n)),
            "event": draw(st.lists(st.sampled_from(EVENTS), min_size=n, max_size=n)),
            "device": draw(st.lists(st.sampled_from(["gpu-0", "gpu-1", None]), min_size=n, max_size=n)),
            "dur_ms": draw(st.lists(st.none() | st.floats(0, 1e4, allow_nan=False), min_size=n, max_size=n)),
            "gpu_util": [None] * n,  # a column another layer fills: kept as a constant
            "env": ["cloud-a"] * n if constant_env else draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n)),
            "attempt": [0] * n,
        },
        schema={
            "ts": pl.Int64,
            "event": pl.Categorical,
            "device": pl.Categorical,
            "dur_ms": pl.Float64,
            "gpu_util": pl.Float32,
            "env": pl.Categorical,
            "attempt": pl.UInt8,
        },
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frame=layers(),
    columns=st.none() | st.lists(st.sampled_from([*COLUMNS, "absent"]), unique=True),
    events=st.none() | st.lists(st.sampled_from([*EVENTS, "other"]), unique=True),
)
def test_a_spilled_layer_reads_as_the_layer_in_memory(tmp_path_factory, frame, columns, events):
    directory = tmp_path_factory.mktemp("spill")
    spilled = SpilledLayer.write(directory, frame.iter_columns(), frame.height, dict(frame.schema))
    assert "gpu_util" in spilled.constants and "gpu_util" not in spilled.files  # a constant takes no file
    in_memory, on_disk = Layers({"gpu": frame}), Layers({"gpu": spilled})
    assert on_disk.spilled and not in_memory.spilled
    assert (on_disk.height("gpu"), on_disk.schema("gpu")) == (in_memory.height("gpu"), in_memory.schema("gpu"))
    got, want = on_disk.read("gpu", columns, events=events), in_memory.read("gpu", columns, events=events)
    assert got is not None and want is not None
    assert_frame_equal(got, want, check_exact=True)
    assert on_disk.read("network", columns) is None  # a layer the trace does not have
    assert_frame_equal(on_disk["gpu"], frame, check_exact=True)


@settings(max_examples=60, deadline=None)
@given(
    frame=layers(),
    columns=st.none() | st.lists(st.sampled_from([*COLUMNS, "absent"]), unique=True),
    events=st.none() | st.lists(st.sampled_from([*EVENTS, "other"]), unique=True),
)
def test_a_layer_split_by_event_reads_as_the_whole_layer(frame, columns, events):
    whole, parts = Layers({"gpu": frame}), Layers.in_parts({"gpu": frame})
    assert (parts.height("gpu"), parts.schema("gpu")) == (whole.height("gpu"), whole.schema("gpu"))
    got, want = parts.read("gpu", columns, events=events), whole.read("gpu", columns, events=events)
    assert got is not None and want is not None
    assert_frame_equal(got, want, check_exact=True)
    assert_frame_equal(parts["gpu"], frame, check_exact=True)
    # Unordered: the same rows, each event's rows in their order, events not interleaved.
    loose = parts.read("gpu", ["event", "ts", "dur_ms"], events=events, ordered=False)
    ordered = whole.read("gpu", ["event", "ts", "dur_ms"], events=events)
    assert loose is not None and ordered is not None and loose.height == ordered.height
    for event in EVENTS:
        assert_frame_equal(loose.filter(pl.col("event") == event), ordered.filter(pl.col("event") == event), check_exact=True)


def test_a_part_keeps_only_the_columns_its_events_fill():
    # gpu exec rows carry durations and no utilization, samples the reverse: as one frame every
    # row holds a slot for both; as parts each column not filled by an event is one null value.
    n = 50_000
    frame = pl.DataFrame(
        {
            "event": ["exec", "sample"] * n,
            "ts": range(2 * n),
            "dur_ms": [1.5, None] * n,
            "gpu_util": [None, 0.5] * n,
        },
        schema={"event": pl.Categorical, "ts": pl.Int64, "dur_ms": pl.Float64, "gpu_util": pl.Float64},
    )
    parts = EventParts.split(frame)
    assert isinstance(parts, EventParts) and set(parts.parts) == {"exec", "sample"}
    split_bytes = sum(part.estimated_size() for part in parts.parts.values())
    assert split_bytes < 0.75 * frame.estimated_size()
    assert parts.read(["dur_ms"], ["exec"])["dur_ms"].null_count() == 0


def test_a_layer_of_one_event_is_not_split():
    frame = pl.DataFrame({"event": ["sample", "sample"], "ts": [1, 2]}, schema={"event": pl.Categorical, "ts": pl.Int64})
    assert EventParts.split(frame) is frame


def test_a_layer_of_events_alone_splits_and_reads_back():
    frame = pl.DataFrame({"event": ["exec", "sample", "exec", None]}, schema={"event": pl.Categorical})
    parts = Layers.in_parts({"gpu": frame})
    assert_frame_equal(parts["gpu"], frame)
    assert parts.read("gpu", ["event"], events=["exec"])["event"].to_list() == ["exec", "exec"]  # type: ignore[index]


def test_columns_come_in_the_layers_order_whatever_order_they_are_asked_in():
    frame = pl.DataFrame({"ts": [1, 2], "event": ["exec", "sample"], "device": ["a", "b"]})
    assert Layers({"gpu": frame}).read("gpu", ["device", "ts"]).columns == ["ts", "device"]  # type: ignore[union-attr]


def test_the_spill_directory_goes_with_the_last_layers_that_refers_to_it():
    directory = SpillDirectory()
    frame = pl.DataFrame({"ts": [1, 2, 3], "event": ["exec", "exec", "sample"]})
    spilled = SpilledLayer.write(directory.path / "gpu", frame.iter_columns(), frame.height, dict(frame.schema))
    layers = Layers({"gpu": spilled}, spill_dir=directory)
    path = directory.path
    del directory
    replaced = layers.replace("queue", pl.DataFrame({"ts": [1]}))  # shares the directory
    del layers
    gc.collect()
    assert path.is_dir() and replaced.read("gpu", ["ts"]) is not None
    del replaced, spilled
    gc.collect()
    assert not path.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_spill_directory_left_by_a_killed_run_is_removed_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = tmp_path / f"{SPILL_PREFIX}killed"
    (killed / "gpu").mkdir(parents=True)
    (killed / OWNER_FILE).write_text(f"{_dead_pid()} 12345")
    reused = tmp_path / f"{SPILL_PREFIX}reused"  # its pid now names another process (this one)
    reused.mkdir()
    (reused / OWNER_FILE).write_text(f"{os.getpid()} 0")
    running = SpillDirectory()  # this process's: stays
    unowned = tmp_path / f"{SPILL_PREFIX}unowned"  # no owner file (being made, or older): stays
    unowned.mkdir()
    other = tmp_path / "other-dir"
    other.mkdir()
    (other / OWNER_FILE).write_text(f"{_dead_pid()} 1")
    assert not killed.exists() and not reused.exists()  # removed when `running` was made
    assert remove_abandoned(tmp_path) == []
    assert running.path.is_dir() and unowned.is_dir() and other.is_dir()
    running.remove()
    assert not running.path.exists()


def test_a_failed_spill_write_is_an_input_error_naming_the_directory_and_tmpdir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    frame = pl.DataFrame({"ts": [1, 2, 3]})
    with pytest.raises(InputError, match=r"a-file.*cannot write the work units' temporary files.*TMPDIR"):
        SpilledLayer.write(blocker / "gpu", frame.iter_columns(), frame.height, dict(frame.schema))
    with pytest.raises(InputError, match=r"No space left on device.*TMPDIR"), spill_errors(Path("/dev")):
        pl.DataFrame({"a": list(range(100_000))}).write_parquet("/dev/full")  # a full disk
