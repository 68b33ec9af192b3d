"""Interconnect features (domain AI.11): provisioned capacity that the communication topology
cannot make usable (interconnect-induced capacity inaccessibility, seed 002 section 5.3).

The link under study is the most saturated link that carries KV transfers: the largest share of
sampled windows with `link_util >= SATURATED_UTIL` (ties: higher mean utilization). Devices *behind*
that link are those whose KV transfers (as source or destination) go over it almost exclusively
(share >= `BEHIND_SHARE`): for them the link is the only path to the rest of the serving graph.
Their *peers* are the devices not behind the link that do the same kind of work: the same pool
when it has such devices, else the same dominant exec phase.

Capacity is inaccessible when the link is saturated, requests routed over it spend a large share
of their latency in the transfer, and the devices behind it stay far less busy than their peers
over the same period (from the moment the last of them came online: `device_info`, first sample
or first exec span) while the rest of the fleet is busy: the hardware exists, but the interconnect
cannot operationalize it, so throughput does not scale with the devices added.
"""

from __future__ import annotations

from typing import cast

import polars as pl

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.paths import DEVICE_TABLE_COLUMNS, NS_PER_MS, device_table

SATURATED_UTIL = 0.9  # a link window at >= 90% utilization has no headroom left
BEHIND_SHARE = 0.9  # a device whose KV transfers use the link at least this often is behind it
MIN_LINK_SAMPLES = 10
MIN_REQUESTS = 20
MIN_PERIOD_S = 10.0
MIN_SATURATION = 0.1  # below this the link under study is not cutting any capacity off
MAX_LISTED = 10
MAX_PEERS = 64  # peers measured for the busy and throughput comparison

NEEDS = ("link", "link_util", "dur_ms", "src_device", "dst_device")
STRANDED = (  # the features comparing the devices behind the link with their peers
    "interconnect_bound_device_busy_ratio",
    "interconnect_bound_device_throughput_ratio",
    "interconnect_bound_device_share_frac",
    "interconnect_bound_pool_wait_frac",
)
# What the group reads of the layers (a large trace's layers are read from disk, column by column).
_NET_COLUMNS = ("event", "request_key", "kind", "bytes", *NEEDS)
_EXEC_COLUMNS = ("ts", "event", "device", "dur_ms", "phase")  # _stranded: exec spans
_EVERY_ROW_COLUMNS = ("ts", "device")  # _stranded: first and last ts of any gpu row (aggregated: any order)
_DISPATCH_COLUMNS = ("event", "device", "pool")  # _stranded: dispatch pools, when device_info has none


@feature_group(
    "interconnect",
    [
        FeatureSpec(
            "interconnect_link_saturated_frac", "frac",
            f"Share of the sampled windows with link_util >= {SATURATED_UTIL} on the most saturated link that carries "
            "KV transfers (the link under study).",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_link_util_mean_frac", "frac",
            "Mean sampled link_util of the link under study.",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_transfer_share_frac", "frac",
            "Median over completed inference requests whose KV transfer crossed the link under study of "
            "kv_transfer_ms / end-to-end latency: how much of their latency is spent moving state over it.",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_path_slowdown_ratio", "ratio",
            "Median KV-transfer time per byte on the link under study / the same over all other links "
            "(None with a single link).",
            NEEDS + ("bytes",),
        ),
        FeatureSpec(
            "interconnect_bound_device_busy_ratio", "ratio",
            f"Busy fraction (union of exec spans) of the devices behind the link under study (>= {BEHIND_SHARE:.0%} of "
            "their KV transfers use it) / that of their peers (same pool, else same exec phase, not behind the link), "
            "over the same period from when the last of them came online to the end of the trace (< 1: provisioned "
            f"devices sit idle; at most {MAX_PEERS} peers, evenly spaced by name, are measured). None when the link "
            f"under study is saturated in less than {MIN_SATURATION:.0%} of its windows (it cuts no capacity off).",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_bound_device_throughput_ratio", "ratio",
            "Completed inference requests per device-second served by the devices behind the link under study / "
            "the same for their peers, over the same period: what the added or link-bound hardware contributes.",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_bound_device_share_frac", "frac",
            "Devices behind the link under study / (those devices + their peers): the share of that part of the "
            "fleet whose capacity depends on the link.",
            NEEDS,
        ),
        FeatureSpec(
            "interconnect_bound_pool_wait_frac", "frac",
            "Share of the inference requests of the pools of the devices behind the link under study, arriving in the "
            "same period, that waited for a dispatch (queue wait > 0, or decode-side queueing for decode devices): "
            "requests queue while the link-bound devices idle.",
            NEEDS,
        ),
    ],
)
def interconnect(ctx: FeatureContext) -> GroupResult:
    # Transfers and link samples are filtered apart: each event's rows in order suffice (no sort).
    net = ctx.layer("network", _NET_COLUMNS, ordered=False)
    if net is None:
        return GroupResult({}, reason="no network layer")
    if not set(NEEDS) <= set(net.columns):
        return GroupResult({}, reason="the network layer has no " + ", ".join(c for c in NEEDS if c not in net.columns))
    kind = (pl.col("kind") == "kv_transfer") if "kind" in net.columns else pl.lit(True)
    transfers = net.lazy().filter((pl.col("event") == "transfer") & kind & pl.col("link").is_not_null())
    links = (
        net.lazy()
        .filter((pl.col("event") == "sample") & pl.col("link").is_not_null() & pl.col("link_util").is_not_null())
        .group_by("link")
        .agg(
            pl.len().alias("n"),
            (pl.col("link_util") >= SATURATED_UTIL).mean().alias("sat"),
            pl.col("link_util").mean().alias("util"),
        )
        .filter(pl.col("n") >= MIN_LINK_SAMPLES)
        .join(transfers.select(pl.col("link").unique()), on="link", how="semi")
        .with_columns(pl.col("link").cast(pl.String))
        .sort(["sat", "util", "link"], descending=[True, True, False])
        .collect()
    )
    if links.is_empty():
        return GroupResult({}, reason=f"no link that carries KV transfers has {MIN_LINK_SAMPLES} utilization samples")
    top = links.row(0, named=True)
    link = top["link"]
    on_link = pl.col("link") == link
    values: dict[str, float | None] = {
        "interconnect_link_saturated_frac": top["sat"],
        "interconnect_link_util_mean_frac": top["util"],
    }
    detail: dict[str, object] = {"link": link, "link_samples": int(top["n"]), "links_compared": links.height}

    # Latency share of the transfer for requests routed over the link.
    routed = transfers.filter(on_link & pl.col("request_key").is_not_null()).select(pl.col("request_key").unique())
    done = ctx.completed.lazy().filter(pl.col("latency_ms") > 0).join(routed, on="request_key", how="semi")
    share = done.select(
        pl.len().alias("n"), (pl.col("kv_transfer_ms").fill_null(0.0) / pl.col("latency_ms")).median().alias("share")
    ).collect().row(0, named=True)
    reasons = {
        "interconnect_transfer_share_frac": (
            f"fewer than {MIN_REQUESTS} completed requests moved KV over the link under study"
        ),
        "interconnect_path_slowdown_ratio": "no KV transfers with bytes on the link under study and on another link",
    }
    if share["n"] >= MIN_REQUESTS:
        values["interconnect_transfer_share_frac"] = share["share"]
    detail["requests_over_link"] = int(share["n"])

    if "bytes" in net.columns:
        per_byte = (
            transfers.filter((pl.col("bytes") > 0) & pl.col("dur_ms").is_not_null())
            .group_by(on_link.alias("on"))
            .agg((pl.col("dur_ms") / pl.col("bytes")).median().alias("x"))
            .collect()
        )
        by = dict(zip(per_byte["on"].to_list(), per_byte["x"].to_list()))
        if by.get(True) is not None and by.get(False):
            values["interconnect_path_slowdown_ratio"] = by[True] / by[False]

    if not ctx.has_layer("gpu"):
        reasons.update(dict.fromkeys(STRANDED, "no gpu layer to compare the devices behind the link with their peers"))
    elif top["sat"] < MIN_SATURATION:
        why = f"the link under study is saturated in less than {MIN_SATURATION:.0%} of its windows (it cuts no capacity off)"
        reasons.update(dict.fromkeys(STRANDED, why))
    else:
        stranded, why = _stranded(ctx, transfers, on_link, detail)
        values.update(stranded)
        reasons.update(why)
    return GroupResult(values, details={"interconnect_link_saturated_frac": detail}, reasons=reasons)


def _stranded(
    ctx: FeatureContext,
    transfers: pl.LazyFrame,
    on_link: pl.Expr,
    detail: dict[str, object],
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Devices behind the link vs their peers: busy fraction, throughput, queueing of their pools;
    and why those left out are undefined."""
    touching = pl.concat(
        [
            transfers.filter(on_link).select(pl.col("src_device").alias("device")),
            transfers.filter(on_link).select(pl.col("dst_device").alias("device")),
        ]
    ).filter(pl.col("device").is_not_null()).unique().collect()["device"]
    ids = touching.implode()
    ends = pl.concat(
        [
            transfers.filter(pl.col("src_device").is_in(ids)).select(pl.col("src_device").alias("device"), on_link.alias("on")),
            transfers.filter(pl.col("dst_device").is_in(ids)).select(pl.col("dst_device").alias("device"), on_link.alias("on")),
        ]
    )
    behind = (
        ends.filter(pl.col("device").is_in(ids))
        .group_by("device")
        .agg(pl.col("on").mean().alias("share"))
        .filter(pl.col("share") >= BEHIND_SHARE)
        .collect()["device"]
    )
    if behind.is_empty():
        why = f"no device sends or receives {BEHIND_SHARE:.0%} of its KV transfers over the link under study"
        return {}, dict.fromkeys(STRANDED, why)
    # The caller checked that the trace has gpu rows.
    exec_rows = cast(pl.DataFrame, ctx.layer("gpu", _EXEC_COLUMNS, events=("exec",)))
    gpu = cast(pl.DataFrame, ctx.layer("gpu", _EVERY_ROW_COLUMNS, ordered=False))
    execs = exec_rows.lazy().filter((pl.col("event") == "exec") & pl.col("device").is_not_null() & pl.col("dur_ms").is_not_null())
    phase = pl.col("phase").cast(pl.String) if "phase" in exec_rows.columns else pl.lit("all")
    info = device_table(_device_info(ctx)).select("device", "pool", "first_seen_ns").collect()
    if info["pool"].null_count() == info.height:
        sched = ctx.layer("scheduler", _DISPATCH_COLUMNS, events=("dispatch",))
        if sched is not None and {"pool", "device"} <= set(sched.columns):
            info = info.drop("pool").join(
                sched.lazy().filter((pl.col("event") == "dispatch") & pl.col("pool").is_not_null())
                .group_by("device", "pool").agg(pl.len())
                .group_by("device")
                .agg(pl.col("pool").sort_by(["len", pl.col("pool").cast(pl.String)], descending=[True, False]).first())
                .collect(),
                on="device", how="full", coalesce=True,
            )

    def roles(devices: pl.Series) -> pl.DataFrame:
        """Dominant exec phase of each device in `devices` (most spans; ties by name)."""
        return (
            execs.filter(pl.col("device").is_in(devices.implode()))
            .group_by("device", phase.alias("phase"))
            .agg(pl.len().alias("n"))
            .collect()
            .group_by("device")
            .agg(pl.col("phase").sort_by(["n", "phase"], descending=[True, False]).first())
        )

    bound = roles(behind).join(info, on="device", how="left")
    if bound.is_empty():
        return {}, dict.fromkeys(STRANDED, "the devices behind the link under study ran no exec spans")
    pools = bound["pool"].drop_nulls().unique()
    phases = bound["phase"].drop_nulls().unique()
    same_pool = info.filter(pl.col("pool").is_in(pools.implode()) & ~pl.col("device").is_in(behind.implode()))["device"]
    peers = roles(same_pool).filter(pl.col("phase").is_in(phases.implode())) if same_pool.len() else None
    if peers is None or peers.is_empty():
        everyone = execs.select(pl.col("device").unique()).collect()["device"]
        peers = roles(everyone.filter(~everyone.is_in(behind.implode()))).filter(pl.col("phase").is_in(phases.implode()))
    if peers.is_empty():
        return {}, dict.fromkeys(STRANDED, "no peer devices (same pool or same exec phase) outside the link under study")
    peer_count = peers.height
    if peer_count > MAX_PEERS:  # an evenly spaced sample (by name) stands for the peer group
        ordered = peers.with_columns(pl.col("device").cast(pl.String).alias("_name")).sort("_name")
        peers = ordered[[int(i * peer_count / MAX_PEERS) for i in range(MAX_PEERS)]].drop("_name")
    chosen = pl.concat([bound.select("device", pl.lit(True).alias("behind")), peers.select("device", pl.lit(False).alias("behind"))])
    first_row = (  # first sample, exec span or device_info row of each device behind the link
        gpu.lazy().filter(pl.col("device").is_in(behind.implode())).group_by("device").agg(pl.col("ts").min().alias("_first"))
    )
    onlines = bound.join(first_row.collect(), on="device", how="left").select(
        pl.min_horizontal("first_seen_ns", "_first").max()
    ).item()
    t_end = gpu.select(pl.col("ts").max()).item()
    if onlines is None or t_end is None or (t_end - onlines) < MIN_PERIOD_S * 1e9:
        why = f"the devices behind the link under study were all online for less than {MIN_PERIOD_S:g} s"
        return {}, dict.fromkeys(STRANDED, why)
    t_on = onlines
    period_ns = t_end - t_on
    busy = _busy_ns(execs.join(chosen.lazy(), on="device", how="inner"), t_on, t_end)
    f = {k: busy.get(k, 0) / (n * period_ns) for k, n in ((True, bound.height), (False, peers.height))}
    out: dict[str, float | None] = {
        "interconnect_bound_device_share_frac": bound.height / (bound.height + peer_count),
    }
    if f[False] > 0:
        out["interconnect_bound_device_busy_ratio"] = f[True] / f[False]
    detail.update(
        {
            "devices_behind_link": sorted(str(d) for d in bound["device"].to_list())[:MAX_LISTED],
            "devices_behind_link_count": bound.height,
            "peer_devices": peer_count,
            "peer_devices_measured": peers.height,
            "behind_busy_frac": round(f[True], 4),
            "peer_busy_frac": round(f[False], 4),
            "period_s": round(period_ns / 1e9, 3),
        }
    )

    # Throughput per device-second and queueing of the pools, over the same period.
    decode_side = set(phases.to_list()) == {"decode"}
    pool_col, wait_col = ("decode_pool", "decode_queue_ms") if decode_side else ("pool", "queue_wait_ms")
    bound_ids, peer_ids = bound["device"].implode(), peers["device"].implode()
    served = pl.col("outcome") == "completed"
    row = (
        ctx.inference.lazy()
        .filter(pl.col("arrive_ns") >= t_on)
        .select(
            (served & (pl.col("prefill_device").is_in(bound_ids) | pl.col("decode_device").is_in(bound_ids))).sum().alias("bound_served"),
            (served & (pl.col("prefill_device").is_in(peer_ids) | pl.col("decode_device").is_in(peer_ids))).sum().alias("peer_served"),
            (pl.col(pool_col).is_in(pools.cast(pl.Categorical).implode()) & pl.col(wait_col).is_not_null()).alias("_in"),
            (pl.col(wait_col) > 0).alias("_waited"),
        )
        .select(
            pl.col("bound_served").first(),
            pl.col("peer_served").first(),
            pl.col("_in").sum().alias("in_pools"),
            (pl.col("_in") & pl.col("_waited")).sum().alias("waited"),
        )
        .collect()
        .row(0, named=True)
    )
    why = {
        "interconnect_bound_device_busy_ratio": "the peer devices were never busy in the period",
        "interconnect_bound_device_throughput_ratio": "the peer devices completed no requests in the period",
        "interconnect_bound_pool_wait_frac": f"fewer than {MIN_REQUESTS} requests of the link-bound pools in the period",
    }
    if row["peer_served"] > 0:
        out["interconnect_bound_device_throughput_ratio"] = (row["bound_served"] / bound.height) / (
            row["peer_served"] / peers.height
        )
    if row["in_pools"] >= MIN_REQUESTS:
        out["interconnect_bound_pool_wait_frac"] = row["waited"] / row["in_pools"]
    return out, why


def _device_info(ctx: FeatureContext) -> pl.DataFrame | None:
    """The gpu layer's device_info rows, all that paths.device_table reads of it."""
    return ctx.layer("gpu", DEVICE_TABLE_COLUMNS, events=("device_info",))


def _busy_ns(execs: pl.LazyFrame, t_on: int, t_end: int) -> dict[bool, int]:
    """Summed per-device union length of exec spans within [t_on, t_end), in ns, by `behind` flag.

    Spans are laid out on one axis, each device shifted by its own offset so that devices never
    overlap; sorted by start, a span adds only the part beyond every earlier end (the running max).
    """
    width = t_end - t_on + 1
    spans = (
        execs.select(
            "device",
            "behind",
            (pl.col("ts").clip(t_on, t_end) - t_on).alias("start"),
            ((pl.col("ts") + (pl.col("dur_ms") * NS_PER_MS).cast(pl.Int64)).clip(t_on, t_end) - t_on).alias("end"),
        )
        .filter(pl.col("end") > pl.col("start"))
        .with_columns((pl.col("device").to_physical().rank("dense").cast(pl.Int64) * width).alias("_off"))
        .with_columns(pl.col("start") + pl.col("_off"), pl.col("end") + pl.col("_off"))
        .sort("start")
        .with_columns(pl.col("end").cum_max().shift(1).fill_null(0).alias("_reach"))
        .with_columns((pl.col("end") - pl.max_horizontal("start", "_reach")).clip(0, None).alias("_new"))
        .group_by("behind")
        .agg(pl.col("_new").sum())
        .collect()
    )
    return dict(zip(spans["behind"].to_list(), spans["_new"].to_list()))


# --- handoff: the same physics read from request paths alone (no network layer needed) ----------
# A disaggregated request's handoff (prefill end -> decode dispatch) is its KV transfer plus its
# wait for a decode slot. The slot wait depends on the decode pool at that moment, not on which
# prefill host the KV comes from; the transfer depends on that host's path. So a prefill host
# whose requests hand off far slower than the other hosts' requests of the same decode pool in the
# same seconds is behind a path that cannot carry its work.
HANDOFF_BIN_NS = 10_000_000_000  # handoffs are compared within 10-s bins of the same decode pool
HANDOFF_NEEDS = ("dur_ms", "device")


@feature_group(
    "interconnect_handoff",
    [
        FeatureSpec(
            "interconnect_handoff_share_frac", "frac",
            "Median, over completed disaggregated inference requests whose prefill ran on the source under study, "
            "of handoff / latency, where handoff = start of the first decode exec span - end of the last prefill span "
            "(without phases on exec spans: decode dispatch - prefill end = kv_transfer_ms + decode_queue_ms): the KV "
            "transfer plus the wait for a decode slot. The source under study is the prefill host (device "
            f"without host information) with the largest handoff excess among those with >= {MIN_REQUESTS} such requests.",
            HANDOFF_NEEDS,
        ),
        FeatureSpec(
            "interconnect_handoff_excess_ratio", "ratio",
            "Median, over the requests of the source under study, of (handoff + 1 ms) / (median handoff of all "
            "requests of the same decode pool that reached decode in the same 10-s bin + 1 ms): how much slower work from that "
            "prefill host reaches decode than work from its peers at the same moment (1 = no slower).",
            HANDOFF_NEEDS,
        ),
    ],
)
def interconnect_handoff(ctx: FeatureContext) -> GroupResult:
    info = device_table(_device_info(ctx)).select("device", pl.col("host").cast(pl.String), pl.col("pool").cast(pl.String))
    # The handoff from the exec spans (prefill end -> first decode span: the request table's
    # columns) when phases are recorded, else from the scheduler's decode dispatch
    # (decode_queue_ms + the KV transfer, if recorded).
    done = ctx.completed.lazy().filter(pl.col("prefill_device").is_not_null() & (pl.col("latency_ms") > 0)).with_columns(
        *_span_handoff()
    )
    handoff = pl.coalesce(
        pl.col("_span_handoff_ms"),
        pl.when(pl.col("decode_dispatch_ns").is_not_null())
        .then(pl.col("decode_queue_ms") + pl.col("kv_transfer_ms").fill_null(0.0)),
    )
    requests = (
        done.join(info.lazy().select(pl.col("device").alias("prefill_device"), pl.col("host").alias("_host")),
                  on="prefill_device", how="left")
        .join(info.lazy().select(pl.col("device").alias("decode_device"), pl.col("pool").alias("_dpool")),
              on="decode_device", how="left")
        .select(
            pl.coalesce(pl.col("_host"), pl.col("prefill_device").cast(pl.String)).alias("_source"),
            handoff.alias("_handoff"),
            pl.col("latency_ms"),
            pl.coalesce(pl.col("decode_pool").cast(pl.String), pl.col("_dpool")).alias("_decode_pool"),
            (pl.coalesce(pl.col("decode_dispatch_ns"), pl.col("_decode_ns")) // HANDOFF_BIN_NS).alias("_bin"),
        )
        .filter(pl.col("_handoff").is_not_null())
        .with_columns(pl.col("_handoff").median().over("_decode_pool", "_bin").alias("_peer_handoff"))
        .group_by("_source")
        .agg(
            pl.len().alias("n"),
            (pl.col("_handoff") / pl.col("latency_ms")).median().alias("share"),
            ((pl.col("_handoff") + 1.0) / (pl.col("_peer_handoff") + 1.0)).median().alias("excess"),
        )
        .filter(pl.col("n") >= MIN_REQUESTS)
        .sort(["excess", "_source"], descending=[True, False])
        .collect()
    )
    if requests.height < 2:
        return GroupResult({}, reason=(
            f"fewer than two prefill hosts with {MIN_REQUESTS} completed disaggregated requests "
            "(a handoff is compared with other hosts' handoffs)"
        ))
    top = requests.row(0, named=True)
    return GroupResult(
        {"interconnect_handoff_share_frac": top["share"], "interconnect_handoff_excess_ratio": top["excess"]},
        details={"interconnect_handoff_excess_ratio": {
            "source": top["_source"], "requests": int(top["n"]), "sources_compared": requests.height,
        }},
    )


def _span_handoff() -> list[pl.Expr]:
    """`_span_handoff_ms`: from the end of the request's last prefill span to the start of its
    first decode span (ms, >= 0), and `_decode_ns`: that start; both null unless the request has
    spans of both phases."""
    prefill_end, decode_start = pl.col("prefill_exec_end_ns"), pl.col("decode_exec_start_ns")
    return [
        ((decode_start - prefill_end).cast(pl.Float64) / NS_PER_MS).clip(0.0).alias("_span_handoff_ms"),
        pl.when(prefill_end.is_not_null()).then(decode_start).alias("_decode_ns"),
    ]
