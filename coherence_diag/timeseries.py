"""Windowed time series per pool, device, queue, link and host.

Every table is long-form: one row per (entity, window_start_ns) with the window's aggregates.
Windows are aligned to multiples of the window length since the epoch, so two traces (or two
shards of one) use the same grid and their tables can be concatenated and re-aggregated.
Column meanings are in docs/paths.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import polars as pl

from coherence_diag.layer_store import Layers
from coherence_diag.paths import MS_PER_NS, NS_PER_MS, is_inference
from coherence_diag.validate import rises_strictly

DEFAULT_WINDOW_S = 1.0
# The gpu samples' signals in the device table (each a mean per device and window).
DEVICE_SIGNALS = ("gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "power_w")


@dataclass
class TimeSeries:
    window_ns: int
    pools: pl.DataFrame  # pool, window_start_ns, arrivals, completions, timeouts, drops, latency_*_ms, ...
    # device, window_start_ns, busy_ms, busy_frac, then the sample signals asked for (gpu_util,
    # ...); without signals, the busy windows only. Row order unspecified.
    devices: pl.DataFrame
    queues: pl.DataFrame  # queue, pool, window_start_ns, depth_mean, depth_max
    links: pl.DataFrame  # link, window_start_ns, link_util, retransmits, transfers, transfer_ms, bytes
    hosts: pl.DataFrame  # host, window_start_ns, steal_frac, cotenant_util, vgpu_wait_ms


def window_start(ts_ns: pl.Expr, window_ns: int) -> pl.Expr:
    """Start of the epoch-aligned window holding `ts_ns` (the grid of every series table)."""
    return (ts_ns // window_ns) * window_ns


def sort_entity_windows(entity: str) -> list[pl.Expr]:
    """Sort order of series tables: entity by category code (an integer sort; string order of
    names would cost a string comparison per row), then time."""
    return [pl.col(entity).to_physical(), pl.col("window_start_ns")]


def build(
    requests: pl.LazyFrame,
    layers: Mapping[str, pl.DataFrame],
    window_s: float = DEFAULT_WINDOW_S,
    *,
    device_signals: tuple[str, ...] = DEVICE_SIGNALS,
) -> TimeSeries:
    """The series tables; `device_signals`: the sample signals the device table carries (the
    others are left out: with any, it has a row per device and sampled window, 29M at 100M
    trace rows; with none, a row per device and busy window)."""
    window_ns = int(round(window_s * 1e9))
    store = Layers.of(layers)
    queue = store.read("queue", ("ts", "event", "queue", "pool", "depth"))
    plans = [
        _pools(requests, queue, window_ns),
        _devices(store, window_ns, device_signals),
        _queues(queue, window_ns),
        _links(store.read("network", ("ts", "event", "link", "link_util", "retransmits", "dur_ms", "bytes")), window_ns),
        _hosts(store.read("hypervisor", ("ts", "event", "host", "steal_frac", "cotenant_util", "vgpu_wait_ms")), window_ns),
    ]
    pools, devices, queues, links, hosts = pl.collect_all(plans)
    return TimeSeries(window_ns, pools, devices, queues, links, hosts)


def _pools(requests: pl.LazyFrame, queue: pl.DataFrame | None, window_ns: int) -> pl.LazyFrame:
    reqs = requests.filter(is_inference() & pl.col("pool").is_not_null())
    arrivals = (
        reqs.filter(pl.col("arrive_ns").is_not_null())
        .group_by("pool", window_start(pl.col("arrive_ns"), window_ns).alias("window_start_ns"))
        .agg(pl.len().alias("arrivals"))
    )
    ended_ns = pl.coalesce("complete_ns", "final_start_ns", "arrive_ns")
    outcomes = (
        reqs.filter(pl.col("outcome") != "unfinished")
        .group_by("pool", window_start(ended_ns, window_ns).alias("window_start_ns"))
        .agg(
            (pl.col("outcome") == "completed").sum().alias("completions"),
            (pl.col("outcome") == "timeout").sum().alias("timeouts"),
            (pl.col("outcome") == "dropped").sum().alias("drops"),
            pl.col("latency_ms").mean().alias("latency_mean_ms"),
            pl.col("latency_ms").max().alias("latency_max_ms"),
            pl.col("slo_met").mean().alias("slo_attainment"),
        )
    )
    waits = (
        reqs.filter(pl.col("dispatch_ns").is_not_null())
        .group_by("pool", window_start(pl.col("dispatch_ns"), window_ns).alias("window_start_ns"))
        .agg(pl.col("queue_wait_ms").mean().alias("queue_wait_mean_ms"), pl.len().alias("dispatches"))
    )
    keys = ["pool", "window_start_ns"]
    frame = arrivals.join(outcomes, on=keys, how="full", coalesce=True).join(waits, on=keys, how="full", coalesce=True)
    if queue is not None and "pool" in queue.columns:
        depth = (
            queue.lazy()
            .filter((pl.col("event") == "sample") & pl.col("pool").is_not_null())
            .group_by("pool", "queue", window_start(pl.col("ts"), window_ns).alias("window_start_ns"))
            .agg(pl.col("depth").mean().alias("depth"))
            .group_by(keys)  # a pool's depth is the sum over its queues
            .agg(pl.col("depth").sum().alias("queue_depth_mean"))
        )
        frame = frame.join(depth, on=keys, how="full", coalesce=True)
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("queue_depth_mean"))
    counts = ["arrivals", "completions", "timeouts", "drops", "dispatches"]
    return frame.with_columns(pl.col(counts).fill_null(0).cast(pl.Int64)).sort(sort_entity_windows("pool"))


def _devices(layers: Layers, window_ns: int, device_signals: tuple[str, ...]) -> pl.LazyFrame:
    """The busy windows, joined (full) with the sampled windows' signal means when any are asked for."""
    busy = _device_busy(layers, window_ns)
    if not device_signals:
        return busy
    return _with_device_signals(busy, layers, window_ns, device_signals)


def _device_busy(layers: Layers, window_ns: int) -> pl.LazyFrame:
    """(device, window_start_ns, busy_ms, busy_frac) of every window in which a device executed.

    The exec rows only (busy_intervals reads no other), freed once their spans are collected."""
    exec_rows = layers.read("gpu", ("ts", "event", "device", "dur_ms"), events=("exec",))
    if exec_rows is None:
        return pl.LazyFrame(schema=_BUSY_SCHEMA)
    busy = busy_intervals(exec_rows.lazy(), window_ns)
    del exec_rows
    return busy


_BUSY_SCHEMA = {"device": pl.Categorical, "window_start_ns": pl.Int64, "busy_ms": pl.Float64, "busy_frac": pl.Float64}


def _with_device_signals(busy: pl.LazyFrame, layers: Layers, window_ns: int, signals: tuple[str, ...]) -> pl.LazyFrame:
    """`busy` (_device_busy's table) joined in full with the mean of each sample signal per
    (device, window): a row per device and window with an exec or a sample (29M at 100M trace
    rows, hence left out of the feature context's series)."""
    names = list(signals)
    sampled = layers.read("gpu", ("ts", "event", "device", *names), events=("sample",))
    if sampled is None:
        return busy.with_columns(pl.lit(None, pl.Float64).alias(s) for s in names)
    per_window = device_window_means(sampled, window_ns, signals)
    del sampled
    keys = ["device", "window_start_ns"]
    packed = device_window_key(layers, window_ns)
    if packed is None:
        joined = busy.join(per_window, on=keys, how="full", coalesce=True)
    else:
        # One Int64 key instead of two columns: a two-column join key is row-encoded first
        # (0.21 -> 0.12 s for 1.8M busy rows and 2.9M samples).
        joined = (
            busy.with_columns(packed)
            .join(per_window.with_columns(packed), on="_key", how="full", coalesce=True)
            .with_columns(pl.coalesce(k, f"{k}_right").alias(k) for k in keys)
        )
    return joined.select(
        "device", "window_start_ns", "busy_ms", "busy_frac", *names
    )  # unsorted: the largest series table; consumers group or sort as they need


def device_window_means(sampled: pl.DataFrame | pl.LazyFrame, window_ns: int, signals: tuple[str, ...]) -> pl.LazyFrame:
    """(device, window_start_ns, *signals): each signal's mean per device and window of the gpu
    sample rows `sampled` (ts, device and the signals; the caller keeps the rows it wants)."""
    names = list(signals)
    samples = (
        sampled.lazy()
        .select("device", window_start(pl.col("ts"), window_ns).alias("window_start_ns"), *names)
        .collect()
    )
    if _one_row_per_key(samples, window_ns):
        # One sample per device and window (as DCGM-style telemetry at the window's period
        # gives): each mean is its single value, and a group-by would only copy the rows (0.25 s
        # at 2.9M samples; the check costs 0.03 s).
        return samples.lazy()
    # A plain (device, window) group-by on a narrow projection: measured faster than one packed
    # integer key, which needs first() aggregations to recover device and window.
    return samples.lazy().group_by("device", "window_start_ns").agg(pl.col(s).mean() for s in names)


def device_window_key(layers: Layers, window_ns: int) -> pl.Expr | None:
    """`_key`: device code x windows + window index since the trace's first window, one Int64
    that identifies (device, window_start_ns) of any window a gpu row or span touches: a join on
    it is ~40% faster than on the two columns, which are row-encoded first. None if it could
    overflow. The extent is over every gpu row, read a column at a time (a layer on disk loads
    one column at once)."""
    ts, code = pl.col("ts"), pl.col("device").to_physical()
    lo, last = cast(pl.DataFrame, layers.read("gpu", ("ts",), ordered=False)).select(ts.min().alias("lo"), ts.max().alias("last")).row(0)
    durations = cast(pl.DataFrame, layers.read("gpu", ("dur_ms",), ordered=False))
    longest_ms = durations.select(pl.col("dur_ms").max()).item() if "dur_ms" in durations.columns else 0.0
    del durations
    top = cast(pl.DataFrame, layers.read("gpu", ("device",), ordered=False)).select(code.max()).item()
    if lo is None or top is None:
        return None
    hi = last + math.ceil((longest_ms or 0.0) * NS_PER_MS)  # no span ends later
    first = lo // window_ns * window_ns
    windows = (hi - first) // window_ns + 1
    if (int(top) + 1) * windows >= 1 << 62:
        return None
    return (code.cast(pl.Int64) * windows + (pl.col("window_start_ns") - first) // window_ns).alias("_key")


def _one_row_per_key(samples: pl.DataFrame, window_ns: int) -> bool:
    """True when no two rows share (device, window_start_ns), device and window not null.

    Checked on one packed Int64 key (window index since the first window x device codes +
    device code): an integer n_unique, far cheaper than hashing the pair. False (the caller then
    groups) when the key could overflow or a key column has nulls.
    """
    if samples.is_empty():
        return True
    if samples["device"].null_count() or samples["window_start_ns"].null_count():
        return False
    lo, hi, top = samples.select(
        pl.col("window_start_ns").min().alias("lo"),
        pl.col("window_start_ns").max().alias("hi"),
        pl.col("device").to_physical().max().alias("top"),
    ).row(0)
    codes = int(top) + 1
    if ((hi - lo) // window_ns + 1) * codes >= 1 << 62:
        return False
    key = (pl.col("window_start_ns") - lo) // window_ns * codes + pl.col("device").to_physical().cast(pl.Int64)
    return all_distinct(samples.select(key).to_series())


def all_distinct(key: pl.Series) -> bool:
    """No value of the integer column `key` (without nulls) occurs twice. Keys of telemetry
    written in (time, device) order usually rise strictly: a check in one pass (≈3 ms at 2.9M
    rows), before the hash-based n_unique (≈50 ms)."""
    return rises_strictly(key) or key.n_unique() == key.len()


def busy_intervals(gpu: pl.LazyFrame, window_ns: int) -> pl.LazyFrame:
    """Busy time per (device, window): the union of a device's exec spans, split at window edges.

    Spans overlap under continuous batching, so busy time is the length of their union, not
    the sum of durations (which could exceed the window).
    """
    spans = (
        gpu.filter((pl.col("event") == "exec") & pl.col("device").is_not_null())
        .select("device", pl.col("ts").alias("start"), (pl.col("ts") + (pl.col("dur_ms") * NS_PER_MS).cast(pl.Int64)).alias("end"))
        .collect()
    )
    packed = _merged_spans_packed(spans)
    # Segments in (device code, start) order: the packed axis's order, or sorted into it.
    segments = (
        _merged_spans_per_device(spans.lazy()).sort(pl.col("device").to_physical(), "start") if packed is None else packed
    ).filter(pl.col("end") > pl.col("start")).collect()
    # Split each merged segment over the windows it covers.
    first_w = window_start(pl.col("start"), window_ns)
    last_w = window_start(pl.col("end") - 1, window_ns)
    pieces = (
        segments.lazy()
        .with_columns(pl.int_ranges(first_w, last_w + 1, window_ns).alias("window_start_ns"))
        .explode("window_start_ns")
        .select(
            "device",
            "window_start_ns",
            (
                pl.min_horizontal("end", pl.col("window_start_ns") + window_ns)
                - pl.max_horizontal("start", "window_start_ns")
            ).alias("_overlap_ns"),
        )
    )
    # In float: an Int64 sum past the range would wrap.
    if segments.select((pl.col("end") - pl.col("start")).cast(pl.Float64).sum()).item() < 2.0**62:
        # In (device, time) order a device's pieces of one window are neighbours: each window's
        # sum is the difference of a running total at the ends of its run, with no group-by of
        # two keys (0.45 -> 0.25 s for 1.75M spans). The running total cannot overflow (checked).
        code, window, total = pl.col("device").to_physical(), pl.col("window_start_ns"), pl.col("_total")
        run_ends = ((code != code.shift(-1)) | (window != window.shift(-1))).fill_null(True)
        per_window = (
            pieces.with_columns(pl.col("_overlap_ns").cum_sum().alias("_total"))
            .filter(run_ends)
            .select("device", "window_start_ns", (total - total.shift(1, fill_value=0)).alias("_busy_ns"))
        )
    else:
        per_window = pieces.group_by("device", "window_start_ns").agg(pl.col("_overlap_ns").sum().alias("_busy_ns"))
    return per_window.select(
        # Times the reciprocal (paths.MS_PER_NS): same bits at every length; a division is such a
        # multiply except on 1-2-row chunks, so the group-by it replaces could vary in the last bit.
        "device", "window_start_ns", (pl.col("_busy_ns").cast(pl.Float64) * MS_PER_NS).alias("busy_ms")
    ).with_columns((pl.col("busy_ms") * NS_PER_MS / window_ns).clip(0.0, 1.0).alias("busy_frac"))


def _merged_spans_per_device(spans: pl.LazyFrame) -> pl.LazyFrame:
    """Union of each device's spans as (device, start, end) segments, with per-device windows."""
    # A new segment starts where a span begins after every earlier end of its device.
    prev_end = pl.col("end").cum_max().shift(1).over("device")
    return (
        spans.sort(pl.col("device").to_physical(), "start")  # integer sort of the device code
        .with_columns((prev_end.is_null() | (pl.col("start") > prev_end)).cum_sum().over("device").alias("_seg"))
        .group_by("device", "_seg")
        .agg(pl.col("start").min(), pl.col("end").max())
    )


def _merged_spans_packed(spans: pl.DataFrame) -> pl.LazyFrame | None:
    """The same segments, with the devices' timelines laid end to end on one Int64 axis.

    Device d's instant t becomes rank(d) * R + (t - lo), R covering the whole trace, so every
    device occupies its own interval of the axis: one single-key sort and plain cumulative
    operations replace a two-key sort and per-device window functions (~1.5x faster at 10M
    rows). None when the packed axis would overflow Int64 (or ends are missing): the caller
    then uses _merged_spans_per_device.
    """
    if spans.is_empty() or spans["end"].null_count():
        return None
    lo, hi = spans.select(pl.col("start").min(), pl.col("end").max()).row(0)
    extent = hi - lo + 1
    rank = pl.col("device").to_physical().cast(pl.Int64)
    if (cast(int, spans["device"].to_physical().max()) + 1) * extent >= 1 << 62:
        rank = pl.col("device").to_physical().rank("dense").cast(pl.Int64)  # category codes can be sparse
        if (spans["device"].n_unique() + 1) * extent >= 1 << 62:
            return None
    offset = rank * extent - lo
    reach = pl.col("_end").cum_max()  # the furthest end so far along the axis
    ordered = (
        spans.lazy()
        .with_columns((offset + pl.col("start")).alias("_start"), (offset + pl.col("end")).alias("_end"), offset.alias("_offset"))
        .sort("_start")
        .with_columns(reach.alias("_reach"))
        .select(
            "device",
            "start",
            (pl.col("_reach") - pl.col("_offset")).alias("end"),
            (pl.col("_reach").shift(1).is_null() | (pl.col("_start") > pl.col("_reach").shift(1))).alias("_first"),
        )
        .collect()
    )
    # In axis order a segment begins at its first span and reaches, at its last span, the end
    # of all its spans (ends of earlier segments lie before its start): the k-th first row and
    # the k-th last row are the k-th segment's bounds, with no group-by.
    starts = ordered.filter(pl.col("_first")).select("device", "start")
    ends = ordered.filter(pl.col("_first").shift(-1, fill_value=True)).select("end")
    return pl.concat([starts, ends], how="horizontal").lazy()


def _queues(queue: pl.DataFrame | None, window_ns: int) -> pl.LazyFrame:
    if queue is None:
        return pl.LazyFrame(
            schema={"queue": pl.Categorical, "pool": pl.Categorical, "window_start_ns": pl.Int64, "depth_mean": pl.Float64, "depth_max": pl.Int64}
        )
    return (
        queue.lazy()
        .filter(pl.col("event") == "sample")
        .group_by("queue", window_start(pl.col("ts"), window_ns).alias("window_start_ns"))
        .agg(pl.col("pool").drop_nulls().min(), pl.col("depth").mean().alias("depth_mean"), pl.col("depth").max().alias("depth_max"))
        .select("queue", "pool", "window_start_ns", "depth_mean", "depth_max")
        .sort(sort_entity_windows("queue"))
    )


def _links(network: pl.DataFrame | None, window_ns: int) -> pl.LazyFrame:
    schema = {
        "link": pl.Categorical,
        "window_start_ns": pl.Int64,
        "link_util": pl.Float64,
        "retransmits": pl.Int64,
        "transfers": pl.UInt32,
        "transfer_ms": pl.Float64,
        "bytes": pl.Int64,
    }
    if network is None:
        return pl.LazyFrame(schema=schema)
    keys = ["link", "window_start_ns"]
    samples = (
        network.lazy()
        .filter((pl.col("event") == "sample") & pl.col("link").is_not_null())
        .group_by("link", window_start(pl.col("ts"), window_ns).alias("window_start_ns"))
        .agg(pl.col("link_util").mean(), pl.col("retransmits").sum())
    )
    transfers = (
        network.lazy()
        .filter((pl.col("event") == "transfer") & pl.col("link").is_not_null())
        .group_by("link", window_start(pl.col("ts"), window_ns).alias("window_start_ns"))
        .agg(pl.len().alias("transfers"), pl.col("dur_ms").sum().alias("transfer_ms"), pl.col("bytes").sum())
    )
    return samples.join(transfers, on=keys, how="full", coalesce=True).select(list(schema)).sort(sort_entity_windows("link"))


def _hosts(hyper: pl.DataFrame | None, window_ns: int) -> pl.LazyFrame:
    cols = ["steal_frac", "cotenant_util", "vgpu_wait_ms"]
    if hyper is None:
        return pl.LazyFrame(schema={"host": pl.Categorical, "window_start_ns": pl.Int64} | {c: pl.Float64 for c in cols})
    return (
        hyper.lazy()
        .filter((pl.col("event") == "sample") & pl.col("host").is_not_null())
        .group_by("host", window_start(pl.col("ts"), window_ns).alias("window_start_ns"))
        .agg([pl.col(c).mean() for c in cols])
        .sort(sort_entity_windows("host"))
    )
