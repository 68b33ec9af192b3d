"""The request-path model: one row per request, from its first arrival to its final outcome.

Built from the clean per-layer tables with Polars lazy group-bys (scheduler rows by request),
joins by request key (execution spans, KV transfers; see request_keys.py), joins by device
(device attributes) and as-of joins by time (host steal at dispatch). Column meanings are in docs/paths.md.

End-to-end latency decomposes along the path (all `_ms`):
    latency = retry_delay + queue_wait + (prefill_exec + kv_transfer + decode_queue + decode_exec
              + residual)
where retry_delay is the time lost in earlier attempts and queue_wait the final attempt's wait
from its arrive/retry to its first dispatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import polars as pl

from coherence_diag.request_keys import KEY

NS_PER_MS = 1_000_000
# Multiply, never divide, by the constant: Polars turns a column / constant into a multiply by its
# reciprocal except on 1-2-row frames, so a division gives other last bits on a tiny unit than
# on the whole trace; the multiply gives the same bits at every length.
MS_PER_NS = 1 / NS_PER_MS
# How old a telemetry sample may be and still describe the moment of a dispatch.
ASOF_TOLERANCE_NS = 60_000 * NS_PER_MS

OUTCOMES = ("completed", "timeout", "dropped", "unfinished")


def is_inference() -> pl.Expr:
    """An inference request: every workload class but `batch`, and a request without a class.

    Compared on the Categorical column itself (no per-row text cast); never null."""
    return pl.col("workload_class").is_null() | (pl.col("workload_class") != "batch")

# Names are Categorical, as in the validated layers (see validate._layer_columns); the id is
# text, with its integer join key (request_keys.py).
REQUEST_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    KEY: pl.Int128(),
    "workload_class": pl.Categorical(),
    "priority": pl.Int64(),
    "env": pl.Categorical(),
    "arrive_ns": pl.Int64(),
    "final_start_ns": pl.Int64(),
    "dispatch_ns": pl.Int64(),
    "decode_dispatch_ns": pl.Int64(),
    "first_token_ns": pl.Int64(),
    "complete_ns": pl.Int64(),
    "attempts": pl.Int64(),
    "preemptions": pl.UInt32(),
    "outcome": pl.String(),
    "pool": pl.Categorical(),
    "decode_pool": pl.Categorical(),
    "prefill_device": pl.Categorical(),
    "decode_device": pl.Categorical(),
    "prefill_accelerator": pl.Categorical(),
    "decode_accelerator": pl.Categorical(),
    "host": pl.Categorical(),
    "virtualized": pl.Boolean(),
    "prompt_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "slo_ms": pl.Float64(),
    "ttft_slo_ms": pl.Float64(),
    "predicted_ms": pl.Float64(),
    "latency_ms": pl.Float64(),
    "ttft_ms": pl.Float64(),
    "queue_wait_ms": pl.Float64(),
    "retry_delay_ms": pl.Float64(),
    "prefill_exec_ms": pl.Float64(),
    "decode_exec_ms": pl.Float64(),
    "exec_ms": pl.Float64(),
    "prefill_exec_end_ns": pl.Int64(),
    "decode_exec_start_ns": pl.Int64(),
    "kv_transfer_ms": pl.Float64(),
    "kv_bytes": pl.Int64(),
    "decode_queue_ms": pl.Float64(),
    "slo_met": pl.Boolean(),
    "ttft_slo_met": pl.Boolean(),
    "steal_frac_at_dispatch": pl.Float64(),
}


# The analysis works on request keys; the id text is attached only to the public table.
PATH_SCHEMA = {c: t for c, t in REQUEST_SCHEMA.items() if c != "request_id"}


def request_paths(layers: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per request seen in the scheduler layer (PATH_SCHEMA: REQUEST_SCHEMA without the
    id text, which `with_request_ids` adds)."""
    sched = layers.get("scheduler")
    if sched is None or sched.is_empty():
        return pl.DataFrame(schema=PATH_SCHEMA)
    return finish_paths(scheduler_lifecycle(sched), _WholeFrames(layers))


def scheduler_lifecycle(sched: pl.DataFrame | None) -> pl.DataFrame | None:
    """What `request_paths` takes of the scheduler layer, one row per request key (None: no
    scheduler rows), for `finish_paths`: the single pass builds it as soon as the layer is
    validated, so that the layer's full rows can be freed before the next layer is read."""
    if sched is None or sched.is_empty():
        return None
    return _scheduler_lifecycle(sched).collect()


class LayerReader(Protocol):
    """What `finish_paths` reads the other layers through (layer_store.Layers)."""

    def read(self, name: str, columns: Iterable[str] | None = None, *, events: Iterable[str] | None = None) -> pl.DataFrame | None:
        """Layer `name`'s rows of `events` (at least those) with those of `columns` it has; None
        when the trace has no such layer."""
        ...


class _WholeFrames:
    """A LayerReader over full frames: each layer whole (finish_paths filters the rows it reads)."""

    def __init__(self, layers: Mapping[str, pl.DataFrame]) -> None:
        self.layers = layers

    def read(self, name: str, columns: Iterable[str] | None = None, *, events: Iterable[str] | None = None) -> pl.DataFrame | None:
        return self.layers.get(name)


def finish_paths(lifecycle: pl.DataFrame | None, layers: LayerReader) -> pl.DataFrame:
    """The request table from the scheduler lifecycle and the other layers' rows. Those need only
    what the projection keeps (projection.READS: exec and device_info rows, KV transfers, steal
    samples, with their columns), so `layers` may be whole or projected."""
    if lifecycle is None:
        return pl.DataFrame(schema=PATH_SCHEMA)
    execs = layers.read("gpu", ("ts", "event", KEY, "phase", "dur_ms"), events=("exec",))
    transfers = layers.read("network", ("ts", "event", KEY, "kind", "dur_ms", "bytes"), events=("transfer",))
    infos = layers.read("gpu", DEVICE_TABLE_COLUMNS, events=("device_info",))
    steal = layers.read("hypervisor", ("ts", "event", "host", "steal_frac"), events=("sample",))
    # The other layers' values are joined onto a narrow frame of the table's keys and devices, in
    # the table's row order (every right side has one row per key), and then put beside the
    # table's columns: a join of the whole table would copy each of its columns, holding two
    # tables at once (10M rows: 1.29 -> 1.12 GiB peak at decay 0). The lifecycle's rows are in
    # LEADING_ORDER already, so the table needs no sort either.
    extras = (
        _attach_devices(
            lifecycle.lazy()
            .select(KEY, "prefill_device", "decode_device")
            .with_row_index(_ROW)
            .join(_exec_per_request(execs), on=KEY, how="left")
            .join(_kv_per_request(transfers), on=KEY, how="left"),
            device_table(infos),
        )
        .sort(_ROW)  # the table's order: half the time of joins that each maintain the left order
        .drop(_ROW, KEY, "prefill_device", "decode_device")
    )
    frame = _attach_steal(lifecycle.hstack(extras.collect()), steal)
    return frame.lazy().with_columns(*_derived()).select([pl.col(c).cast(t) for c, t in PATH_SCHEMA.items()]).collect()


# Row order of the request table: inference requests first, and the completed ones first among
# them. The feature context's `inference` and `completed` tables are then leading slices of the
# table, which share its memory, instead of two filtered copies (2 x 200 MiB at 870k requests).
LEADING_ORDER = (~is_inference()).cast(pl.UInt8) * 2 + (pl.col("outcome") != "completed").cast(pl.UInt8)
# The same order on the scheduler lifecycle, before `outcome` exists: a request is completed
# exactly when it has a `complete` row (_derived). Rows of one class are in no particular order
# (group-by order): readers of the table do not depend on it.
_LIFECYCLE_ORDER = (~is_inference()).cast(pl.UInt8) * 2 + pl.col("complete_ns").is_null().cast(pl.UInt8)


def with_request_ids(requests: pl.DataFrame, ids: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame:
    """The request table with the id text of each key (REQUEST_SCHEMA), from `ids`: scheduler rows
    (`request_key`, `request_id`) with at least one row of every request, such as the scheduler
    layer or `request_id_rows` (lazy: on disk). One id per key, so any row of a key gives it."""
    if ids is None or (isinstance(ids, pl.DataFrame) and ids.is_empty()):
        return pl.DataFrame(schema=REQUEST_SCHEMA)
    text = ids.lazy().select(KEY, pl.col("request_id").cast(pl.String)).unique(KEY, keep="any")
    return requests.lazy().join(text, on=KEY, how="left").select(list(REQUEST_SCHEMA)).collect()


def request_id_rows(sched: pl.DataFrame | None, requests: pl.DataFrame) -> pl.DataFrame | None:
    """The (`request_key`, `request_id`) rows `with_request_ids` needs, kept when the scheduler
    layer is not (projection.py): its `arrive` and `retry` rows, and every row of the requests that
    have neither (their `arrive_ns` is null). About a fifth of the layer's rows, found without
    hashing its keys (a `unique` over every row costs 0.4 s at 4.4M rows; this 0.02 s)."""
    if sched is None:
        return None
    rows = pl.col("event").is_in(["arrive", "retry"])
    unstarted = requests.filter(pl.col("arrive_ns").is_null())[KEY]
    if unstarted.len():
        rows = rows | pl.col(KEY).is_in(unstarted.implode())
    return sched.lazy().filter(rows).select(KEY, "request_id").collect()


# Request attributes: the smallest (largest) value on any of the request's scheduler rows.
_ATTR_MIN = ("pool", "workload_class", "priority", "env", "slo_ms", "ttft_slo_ms")
_ATTR_MAX = ("prompt_tokens", "output_tokens")


def _scheduler_lifecycle(sched_frame: pl.DataFrame) -> pl.LazyFrame:
    """One row per request key: its times, final-attempt dispatches and attributes.

    The layer is aggregated in three group-bys over disjoint rows, joined on the key: dispatch
    rows (about 40% of the layer), arrive/retry rows, and the rest. Each aggregation then reads
    only the rows it concerns, mostly unmasked, and an attribute with no value in a part (the
    format puts most on `arrive` rows) is not aggregated there at all; an attribute found in
    several parts is their min (max). 0.51 s for one group-by -> 0.38-0.40 s at 4.4M rows.
    """
    event = pl.col("event")
    ts = pl.col("ts")
    sched = sched_frame.lazy()
    # Each aggregation costs a pass over its rows: those whose event never occurs in the layer
    # are constants, known from one look at the event values.
    events = set(sched_frame["event"].unique().drop_nulls().to_list())
    if sched_frame["attempt"].null_count():
        # Retry rows name the new attempt; where `attempt` is absent, count the retries so far.
        retries_so_far = (event == "retry").cast(pl.Int64).cum_sum().over(KEY, order_by="ts")
        sched = sched.with_columns(pl.coalesce(pl.col("attempt"), retries_so_far).alias("attempt"))
        has_retries = True
    else:
        has_retries = bool((sched_frame["attempt"] > 0).any())
    # Without any retry every row belongs to the final attempt: skip the per-request window.
    if has_retries:
        sched = sched.with_columns((pl.col("attempt") == pl.col("attempt").max().over(KEY)).alias("_final"))
    final = pl.col("_final") if has_retries else pl.lit(True)
    starts = ["arrive", "retry"]
    masks = {
        "dispatch": event == "dispatch",
        "start": event.is_in(starts),
        "rest": ~event.is_in([*starts, "dispatch"]),
    }
    parts = {name: sched.filter(mask) for name, mask in masks.items()}
    # An attribute with one value on every row of the layer (one env, say) is that value for
    # every request: no aggregation at all.
    constant = {c: sched_frame[c][0] for c in (*_ATTR_MIN, *_ATTR_MAX) if _single_value(sched_frame[c])}
    attrs = tuple(c for c in (*_ATTR_MIN, *_ATTR_MAX) if c not in constant)
    # Which parts have a value of each attribute: masks over the whole layer in one pass, not a
    # filter per part (4.75M rows: 0.04 s against 0.15-0.20 s).
    found = sched_frame.select(
        (pl.col(c).is_not_null() & mask.fill_null(False)).any().alias(f"{name}:{c}") for name, mask in masks.items() for c in attrs
    ).row(0, named=True)

    def attributes(part: str) -> list[pl.Expr]:
        return [
            (pl.col(c).min() if c in _ATTR_MIN else pl.col(c).max()).alias(f"{c}_{part}")
            for c in attrs
            if found[f"{part}:{c}"]
        ]

    def attempt(part: str) -> list[pl.Expr]:
        return [pl.col("attempt").max().alias(f"_attempt_{part}")] if has_retries else []

    # The final attempt's first dispatch is the prefill (or unified) one, its last the decode one.
    final_ts = pl.when(final).then(ts) if has_retries else ts
    dispatched = parts["dispatch"].group_by(KEY).agg(
        final_ts.min().alias("dispatch_ns"),
        pl.when(final_ts.count() >= 2).then(final_ts.max()).alias("decode_dispatch_ns"),
        *_first_and_last_dispatch(final_ts, _ties(sched_frame)),
        exact_ms_sum(pl.when(final).then(pl.col("predicted_ms"))).alias("_predicted_sum"),
        pl.when(final).then(pl.col("predicted_ms")).count().alias("_predicted_n"),
        *attempt("dispatch"),
        *attributes("dispatch"),
    )
    # Without retries (every `attempt` is 0) the final attempt starts at the arrival.
    started = parts["start"].group_by(KEY).agg(
        ts.min().alias("arrive_ns"),
        *([pl.when(final).then(ts).min().alias("final_start_ns")] if has_retries else []),
        *attempt("start"),
        *attributes("start"),
    )

    def any_event(name: str) -> pl.Expr:
        return (event == name).any() if name in events else pl.lit(False)

    rest = parts["rest"].group_by(KEY).agg(
        pl.when(event == "first_token").then(ts).min().alias("first_token_ns"),
        pl.when(event == "complete").then(ts).max().alias("complete_ns"),
        any_event("timeout").alias("_timed_out"),
        any_event("drop").alias("_dropped"),
        ((event == "preempt").sum() if "preempt" in events else pl.lit(0, pl.UInt32)).alias("preemptions"),
        *attempt("rest"),
        *attributes("rest"),
    )
    joined = started.join(rest, on=KEY, how="full", coalesce=True).join(dispatched, on=KEY, how="full", coalesce=True)
    names = set(joined.collect_schema())
    combined = [
        _combine(c, [f"{c}_{p}" for p in parts if f"{c}_{p}" in names], sched_frame.schema[c], c in _ATTR_MIN)
        for c in attrs
    ] + [pl.lit(value, sched_frame.schema[c]).alias(c) for c, value in constant.items()]
    attempts = pl.max_horizontal(f"_attempt_{p}" for p in parts) + 1 if has_retries else pl.lit(1, pl.Int64)
    return joined.with_columns(
        *combined,
        pl.col("final_start_ns") if has_retries else pl.col("arrive_ns").alias("final_start_ns"),
        attempts.alias("attempts"),
        pl.col("_timed_out", "_dropped").fill_null(False),
        pl.col("preemptions").fill_null(0),
    ).with_columns(
        pl.coalesce("_dispatch_pool", pl.col("pool")).alias("pool"),
        pl.when(pl.col("_predicted_n") > 0).then(pl.col("_predicted_sum")).alias("predicted_ms"),
    ).drop(
        # The per-part values, combined above: 13 of 35 columns (75 of 175 MiB at 870k requests).
        *[f"{c}_{p}" for c in (*attrs, "_attempt") for p in parts if f"{c}_{p}" in names],
        "_dispatch_pool", "_predicted_sum", "_predicted_n",
    ).sort(_LIFECYCLE_ORDER)


def _ties(sched: pl.DataFrame) -> bool:
    """Whether a request may have two final-attempt dispatches at one instant (synthetic traces):
    whether two of its dispatches, of any attempt, share their `ts` (never False where such ties
    exist; where they do not, both ways of `_first_and_last_dispatch` give the same values)."""
    dispatches = sched.lazy().filter(pl.col("event") == "dispatch").select(KEY, "ts").collect()
    ts = dispatches["ts"]
    if not ts.null_count() and ts.is_sorted():
        # In time order, dispatches at one instant are neighbours: only runs of equal `ts` are
        # compared (0.32 s -> 0.03 s for hashing every dispatch at 1.75M dispatches).
        same = ts.diff().fill_null(1) == 0
        dispatches = dispatches.filter(same | same.shift(-1, fill_value=False))
    return bool(dispatches.select(pl.struct(KEY, "ts").is_duplicated().any()).item())


def _first_and_last_dispatch(final_ts: pl.Expr, ties: bool) -> list[pl.Expr]:
    """The pool and device of the final attempt's first dispatch (prefill, or unified) and last
    (decode). Where two dispatches share the instant, the smallest name is the first's and the
    largest the last's, whatever the rows' order: min_by/max_by take the row met first, which
    depends on how the rows are chunked (a work unit's slice against the whole trace). Without
    ties both give the same values; min_by/max_by is 2x faster, so it is kept for them."""
    if not ties:
        return [
            pl.col("pool").min_by(final_ts).alias("_dispatch_pool"),
            pl.col("pool").max_by(final_ts).alias("decode_pool"),
            pl.col("device").min_by(final_ts).alias("prefill_device"),
            pl.col("device").max_by(final_ts).alias("decode_device"),
        ]
    first, last = final_ts == final_ts.min(), final_ts == final_ts.max()
    return [
        pl.col("pool").filter(first).min().alias("_dispatch_pool"),
        pl.col("pool").filter(last).max().alias("decode_pool"),
        pl.col("device").filter(first).min().alias("prefill_device"),
        pl.col("device").filter(last).max().alias("decode_device"),
    ]


def _single_value(column: pl.Series) -> bool:
    """No nulls and one value (for names: one category code, i.e. one name)."""
    if column.is_empty() or column.null_count():
        return False
    values = column.to_physical() if column.dtype == pl.Categorical else column
    return values.min() == values.max()


def _combine(name: str, parts: list[str], dtype: pl.DataType, smallest: bool) -> pl.Expr:
    """One attribute from its per-part values: the smallest (largest) non-null one, or null.
    Comparisons of Categorical columns are by text, as Polars' Categorical min/max."""
    if not parts:
        return pl.lit(None, dtype).alias(name)
    pick = pl.col(parts[0])
    for part in parts[1:]:
        other = pl.col(part)
        better = other < pick if smallest else other > pick
        pick = pl.when(other.is_not_null() & (pick.is_null() | better)).then(other).otherwise(pick)
    return pick.alias(name)


def exact_ms_sum(ms: pl.Expr) -> pl.Expr:
    """Sum of millisecond values in integer nanoseconds: a float sum inside a parallel group-by
    depends on the order rows arrive in, an integer sum does not (same trace, same bits)."""
    return (ms * NS_PER_MS).round().cast(pl.Int64).sum() * MS_PER_NS


def _exec_per_request(gpu: pl.DataFrame | None) -> pl.LazyFrame:
    empty = {
        KEY: pl.Int128,
        "prefill_exec_ms": pl.Float64,
        "decode_exec_ms": pl.Float64,
        "exec_ms": pl.Float64,
        "prefill_exec_end_ns": pl.Int64,
        "decode_exec_start_ns": pl.Int64,
    }
    if gpu is None:
        return pl.LazyFrame(schema=empty)
    dur = pl.col("dur_ms")
    prefill, decode = pl.col("phase") == "prefill", pl.col("phase") == "decode"
    end_ns = pl.col("ts") + (dur * NS_PER_MS).cast(pl.Int64)
    return (
        gpu.lazy()
        .filter((pl.col("event") == "exec") & pl.col(KEY).is_not_null())
        .group_by(KEY)
        .agg(  # masked sums, not filters inside agg (0.104 -> 0.077 s at 1.7M spans)
            exact_ms_sum(pl.when(prefill).then(dur)).alias("prefill_exec_ms"),
            exact_ms_sum(pl.when(decode).then(dur)).alias("decode_exec_ms"),
            exact_ms_sum(dur).alias("exec_ms"),
            pl.when(prefill).then(end_ns).max().alias("prefill_exec_end_ns"),
            pl.when(decode).then(pl.col("ts")).min().alias("decode_exec_start_ns"),
        )
    )


def _kv_per_request(network: pl.DataFrame | None) -> pl.LazyFrame:
    empty = {KEY: pl.Int128, "kv_transfer_ms": pl.Float64, "kv_bytes": pl.Int64, "_kv_end_ns": pl.Int64}
    if network is None:
        return pl.LazyFrame(schema=empty)
    dur = pl.col("dur_ms")
    return (
        network.lazy()
        .filter((pl.col("event") == "transfer") & (pl.col("kind") == "kv_transfer") & pl.col(KEY).is_not_null())
        .group_by(KEY)
        .agg(
            exact_ms_sum(dur).alias("kv_transfer_ms"),
            pl.col("bytes").sum().alias("kv_bytes"),
            (pl.col("ts") + (dur * NS_PER_MS).cast(pl.Int64)).max().alias("_kv_end_ns"),
        )
    )


# The gpu columns `device_table` reads (of the `device_info` rows).
DEVICE_TABLE_COLUMNS = ("ts", "event", "device", "host", "pool", "accelerator", "mig_profile", "virtualized")


def device_table(gpu: pl.DataFrame | None) -> pl.LazyFrame:
    """One row per device from `device_info` rows (first seen wins): host, pool, accelerator, ..."""
    schema = {
        "device": pl.Categorical,
        "host": pl.Categorical,
        "pool": pl.Categorical,
        "accelerator": pl.Categorical,
        "mig_profile": pl.Categorical,
        "virtualized": pl.Boolean,
        "first_seen_ns": pl.Int64,
    }
    if gpu is None:
        return pl.LazyFrame(schema=schema)
    ts = pl.col("ts")
    return (
        gpu.lazy()
        .filter(pl.col("event") == "device_info")
        .group_by("device")
        .agg(
            *[pl.col(c).drop_nulls().min_by(ts.filter(pl.col(c).is_not_null())).alias(c)
              for c in ("host", "pool", "accelerator", "mig_profile")],
            pl.col("virtualized").drop_nulls().max().alias("virtualized"),
            ts.min().alias("first_seen_ns"),
        )
        .select(list(schema))
    )


# A row number column: rows joined without keeping their order are put back in it.
_ROW = "_row"


def _attach_devices(requests: pl.LazyFrame, devices: pl.LazyFrame) -> pl.LazyFrame:
    prefill = devices.select(
        pl.col("device").alias("prefill_device"),
        pl.col("accelerator").alias("prefill_accelerator"),
        pl.col("host"),
        pl.col("virtualized"),
    )
    decode = devices.select(pl.col("device").alias("decode_device"), pl.col("accelerator").alias("decode_accelerator"))
    return requests.join(prefill, on="prefill_device", how="left").join(decode, on="decode_device", how="left")


def _attach_steal(requests: pl.DataFrame, hyper: pl.DataFrame | None) -> pl.DataFrame:
    """As-of join: the latest steal sample of the request's host at or before its dispatch, at
    most ASOF_TOLERANCE_NS old. Only requests on sampled hosts are matched, and the request table
    is joined only when some matched (the join alone costs ~0.05 s at 870k requests)."""
    alias = "steal_frac_at_dispatch"
    unmatched = requests.with_columns(pl.lit(None, pl.Float64).alias(alias))
    if hyper is None or "steal_frac" not in hyper.columns:
        return unmatched
    samples = (
        hyper.lazy()
        .filter((pl.col("event") == "sample") & pl.col("steal_frac").is_not_null() & pl.col("host").is_not_null())
        .select("host", pl.col("ts").alias("dispatch_ns"), pl.col("steal_frac").alias(alias))
        # Stable: of a host's samples at one instant the as-of join takes the last in trace
        # order, whatever the trace's size or split into units (an unstable sort made it vary).
        .sort("host", "dispatch_ns", maintain_order=True)
        .collect()
    )
    matched = (
        requests.lazy()
        .filter(pl.col("dispatch_ns").is_not_null() & pl.col("host").is_in(samples["host"].unique().implode()))
        .select(KEY, "host", "dispatch_ns")
        .sort("host", "dispatch_ns")
        .join_asof(
            samples.lazy(), on="dispatch_ns", by="host", strategy="backward", tolerance=ASOF_TOLERANCE_NS, check_sortedness=False
        )
        .filter(pl.col(alias).is_not_null())
        .select(KEY, alias)
        .collect()
    )
    if matched.is_empty():
        return unmatched
    # Joined on the keys alone, in the table's order: the table's columns are not copied.
    steal = requests.lazy().select(KEY).with_row_index(_ROW).join(matched.lazy(), on=KEY, how="left").sort(_ROW).collect()[alias]
    return requests.with_columns(steal)


def _ms_between(later: str, earlier: str) -> pl.Expr:
    return (pl.col(later) - pl.col(earlier)).cast(pl.Float64) * MS_PER_NS


def _derived() -> list[pl.Expr]:
    completed = pl.col("complete_ns").is_not_null()
    ready_ns = pl.max_horizontal("prefill_exec_end_ns", "_kv_end_ns")
    decode_queue = ((pl.col("decode_dispatch_ns") - ready_ns).cast(pl.Float64) * MS_PER_NS).clip(lower_bound=0.0)
    outcome = (
        pl.when(completed)
        .then(pl.lit("completed"))
        .when(pl.col("_timed_out"))
        .then(pl.lit("timeout"))
        .when(pl.col("_dropped"))
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("unfinished"))
    )
    latency = pl.when(completed).then(_ms_between("complete_ns", "arrive_ns"))
    ttft = _ms_between("first_token_ns", "arrive_ns")
    return [
        outcome.alias("outcome"),
        latency.alias("latency_ms"),
        ttft.alias("ttft_ms"),
        _ms_between("dispatch_ns", "final_start_ns").alias("queue_wait_ms"),
        _ms_between("final_start_ns", "arrive_ns").alias("retry_delay_ms"),
        pl.when(pl.col("decode_dispatch_ns").is_not_null() & ready_ns.is_not_null()).then(decode_queue).alias(
            "decode_queue_ms"
        ),
        pl.when(pl.col("slo_ms").is_not_null())
        .then(completed & (latency <= pl.col("slo_ms")).fill_null(False))
        .alias("slo_met"),
        pl.when(pl.col("ttft_slo_ms").is_not_null())
        .then((ttft <= pl.col("ttft_slo_ms")).fill_null(False))
        .alias("ttft_slo_met"),
    ]
