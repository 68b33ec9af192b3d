"""What the analysis reads of the validated layers after the request paths, and `project_layers`,
which keeps only that (docs/scale.md, "Projection after the request paths").

The request paths read the scheduler, exec, transfer, device and steal rows once; after them the
metrics, the feature context, the features, the indices, the time series (`Analysis.series`) and
the report's visuals read the layers again, but most scheduler rows (`arrive`, `first_token`,
`complete`) and some columns of every layer never. `READS` declares, per layer, the events and
the columns those readers use; `project_layers` keeps exactly those rows and columns. The request
paths themselves need of the other layers only what is kept here (paths.finish_paths), so the
single pass (analysis.read_single_pass) projects each layer as soon as it is validated, after
taking the scheduler's request lifecycle (paths.scheduler_lifecycle): the full validated frames
are never all in memory at once.

Readers that need something of *every* row take it before the projection (summary.py): the
observation span and the scheduler's first and last `ts` (metrics.observation_span), the `env`
values (the report's `trace.envs`), the id text of each request (paths.request_id_rows).

A reader named in a comment here that starts reading another event or column must add it here:
tests/test_projection.py compares reports (every feature) with and without the projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from coherence_diag.request_keys import KEY


@dataclass(frozen=True)
class LayerReads:
    """The rows and columns of one layer that are read after the request paths."""

    events: tuple[str, ...]  # rows of these events (every event of the layer: every row)
    columns: tuple[str, ...]  # in any order; a frame keeps its own order
    # Also every row of a request that was retried (a `retry` row or an `attempt` above 0).
    retried_requests: bool = False


READS: dict[str, LayerReads] = {
    "scheduler": LayerReads(
        events=(
            "dispatch",  # accelerators._build_bins, virtualization._spans, interconnect._stranded, service_model.estimate_predicted
            "timeout",  # fleet._build_fleet_windows, retry_amplification.attempt_latency and _timeout_triggered
            "drop",  # retry_amplification.attempt_latency
            "retry",  # fleet.retry_attempts
        ),
        # retry_amplification.attempt_latency reads every row of the requests with more than one
        # attempt; fleet.retry_attempts the `arrive` rows with attempt > 0 (rows of such requests).
        retried_requests=True,
        columns=(
            "ts",  # every reader
            "event",  # every reader
            KEY,  # fleet, retry_amplification, virtualization._spans, service_model.estimate_predicted
            "device",  # accelerators._build_bins, virtualization._spans, interconnect._stranded, service_model
            "env",  # virtualization._spans (dispatch env)
            "pool",  # accelerators._build_bins, virtualization._spans, interconnect._stranded
            "predicted_ms",  # accelerators._build_bins, virtualization._spans; service_model writes it
            "attempt",  # fleet.retry_attempts, retry_amplification.attempt_latency
        ),
    ),
    "queue": LayerReads(
        events=("sample",),  # timeseries (pools, queues), indices._stress_series, idle_memory
        columns=(
            "ts",  # timeseries, indices._stress_series, idle_memory
            "event",  # timeseries
            "queue",  # timeseries, indices._stress_series, idle_memory
            "pool",  # timeseries._pools and _queues
            "depth",  # timeseries, indices._stress_series
            "wait_ms",  # idle_memory
        ),
    ),
    "gpu": LayerReads(
        events=(
            "exec",  # metrics, timeseries.busy_intervals, features, indices, visuals
            "sample",  # metrics._nominal_utilization, timeseries._devices, features, indices, visuals
            "device_info",  # paths.device_table (features, indices, visuals), fleet.pool_devices, metrics' device count
        ),
        columns=(
            "ts",  # every reader (timeseries.device_window_key, interconnect: over every row)
            "event",  # every reader
            KEY,  # metrics._effective_utilization, holds, contention, interconnect, virtualization, indices, visuals
            "device",  # every reader
            "host",  # paths.device_table, virtualization._spans
            "env",  # virtualization._spans (span env)
            "pool",  # paths.device_table, fleet.pool_devices
            "dur_ms",  # metrics, timeseries, features, indices, visuals
            "phase",  # metrics, features, indices, visuals
            "gpu_util",  # metrics, timeseries, idle_memory, memory_path, indices, visuals
            "sm_active",  # timeseries._devices, memory_path
            "mem_bw_util",  # timeseries._devices, memory_path
            "kv_cache_util",  # timeseries._devices, memory_path
            "power_w",  # timeseries._devices, visuals.energy_latency
            "mem_used_bytes",  # idle_memory
            "accelerator",  # paths.device_table
            "mig_profile",  # paths.device_table (read there, used by none of its callers)
            "virtualized",  # paths.device_table
        ),
    ),
    "network": LayerReads(
        events=(
            "transfer",  # timeseries._links, interconnect, accelerators._kv_dispersion_growth, service
            "sample",  # timeseries._links, interconnect, indices._stress_series
        ),
        columns=(
            "ts",  # timeseries, accelerators, service, indices
            "event",  # every reader
            KEY,  # interconnect, service._hot_link_requests
            "src_device",  # interconnect, accelerators._kv_dispersion_growth
            "dst_device",  # interconnect, accelerators._kv_dispersion_growth
            "dur_ms",  # timeseries._links, interconnect, accelerators
            "bytes",  # timeseries._links, interconnect, accelerators
            "kind",  # interconnect, accelerators, service
            "link",  # timeseries._links, interconnect, service, indices
            "link_util",  # timeseries._links, interconnect, indices
            "retransmits",  # timeseries._links
        ),
    ),
    "hypervisor": LayerReads(
        events=(
            "sample",  # timeseries._hosts, virtualization
            "migrate",  # virtualization._attach_migrations, environments
        ),
        columns=(
            "ts",  # every reader
            "event",  # every reader
            "host",  # timeseries._hosts, virtualization
            "device",  # virtualization
            "env",  # virtualization._attach_migrations, environments (migration targets)
            "steal_frac",  # timeseries._hosts, virtualization
            "cotenant_util",  # timeseries._hosts, virtualization
            "vgpu_wait_ms",  # timeseries._hosts
        ),
    ),
}


def project_layers(layers: Mapping[str, pl.DataFrame], keep: tuple[str, ...] = ()) -> dict[str, pl.DataFrame]:
    """The layers as the readers after the request paths see them: of each layer in READS, the
    rows of its events (in their order) and its columns; a layer not in READS is dropped.

    A layer that had rows keeps at least one (its first) even when none is of a read event:
    readers tell a trace without a layer (None) from a layer without the rows they look for.
    Kept columns are not copied (a scalar literal stays one); rows are, when some are dropped.
    `keep`: other columns kept where present (work units keep each row's place in the trace).

    Projecting the concatenation of disjoint parts' projections again (in the trace's order)
    gives the projection of the whole when no request's rows are split between parts: the extra
    first rows of parts without a read event go, the rows each part kept stay."""
    out: dict[str, pl.DataFrame] = {}
    for name, frame in layers.items():
        reads = READS.get(name)
        if reads is not None:
            out[name] = _project(frame, reads, keep)
    return out


def _project(frame: pl.DataFrame, reads: LayerReads, keep_columns: tuple[str, ...] = ()) -> pl.DataFrame:
    wanted = set(reads.columns) | set(keep_columns)
    narrow = frame.select(c for c in frame.columns if c in wanted)
    keep = _kept(frame, reads)
    return narrow if keep is None else narrow.filter(keep)


def kept_rows(name: str, frame: pl.DataFrame) -> pl.Series | None:
    """Which rows of layer `name` the projection keeps (None: every row). `frame` needs only the
    columns the row filter reads: `event`, and for the scheduler `request_key` and `attempt`
    (scale/spill.py projects layers gathered a column at a time)."""
    reads = READS.get(name)
    return None if reads is None else _kept(frame, reads)


def _kept(frame: pl.DataFrame, reads: LayerReads) -> pl.Series | None:
    events = frame["event"].unique().drop_nulls().cast(pl.String).to_list()
    if set(events) <= set(reads.events):
        return None  # every row is read
    keep = frame.select(_row_filter(frame, reads).fill_null(False)).to_series()
    if not keep.any() and frame.height:
        keep = keep.scatter(0, True)
    return keep


def _row_filter(frame: pl.DataFrame, reads: LayerReads) -> pl.Expr:
    keep = pl.col("event").is_in(reads.events)
    if reads.retried_requests:
        retry = (pl.col("event") == "retry") | ((pl.col("attempt") > 0) if "attempt" in frame.columns else pl.lit(False))
        retried = frame.lazy().filter(retry).select(pl.col(KEY).unique()).collect()
        if retried.height:
            keep = keep | pl.col(KEY).is_in(retried[KEY].implode())
    return keep
