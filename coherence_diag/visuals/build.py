"""The report's visuals computed from an `Analysis`: aggregates in Polars, typed `Visual`s out.

    from coherence_diag.visuals import build_visuals
    visuals = build_visuals(analyze("trace.parquet"))            # the eight trace visuals
    visuals = build_visuals(result, comparison, baseline=base)    # + before/after

Every table is an aggregate over a fixed grid (time bins of the observation span, the top-N
devices, pools or series in a stated order), so its size does not grow with the trace. The
time columns (`*_s`) count seconds from `Visual.time_origin_utc`, the start of the first
analysis window of the trace. Nothing here draws: render/charts.py turns a `Visual` into SVG.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from coherence_diag import indices, metrics
from coherence_diag.analysis import Analysis
from coherence_diag.features import FeatureContext
from coherence_diag.features.burst_amplification import burst_episodes, burst_mask
from coherence_diag.features.fleet import FleetWindows, fleet_windows, pool_devices, pool_windows, runs
from coherence_diag.features.retry_amplification import retry_storm
from coherence_diag.layer_store import Layers
from coherence_diag.model import Comparison, iso_utc
from coherence_diag.model.visuals import MAX_EPISODES, Episode, Visual, VisualKind, VisualTable
from coherence_diag.paths import NS_PER_MS, is_inference
from coherence_diag.timeseries import busy_intervals

HEATMAP_BINS = 60  # time bins of the device x time views (heatmap, wave propagation)
TIMELINE_BINS = 120  # time bins of the line views (disruption timeline, energy)
TOP_DEVICES = 16  # devices in the utilization heatmap: the largest hidden capacity first
TOP_SERIES = 20  # stress series in the wave view: the largest excursion first
TOP_POOLS = 30  # pools in the hidden-capacity view: the largest loss first
TOP_STRAGGLERS = 40  # device-phase rows in the straggler view: the slowest against the fleet first
TOP_GROUPS = 12  # ECDF groups: the most requests first
MIN_DEVICE_REQUESTS = 5  # requests a device needs before its service time is compared
EPISODES_PER_KIND = 10  # episodes of one kind marked on a chart (the largest)
# The ECDF's fixed quantile grid: 1% .. 99% in 1% steps, then 99.5% and 99.9% (the tail).
QUANTILE_GRID: tuple[float, ...] = tuple(round(k / 100, 2) for k in range(1, 100)) + (0.995, 0.999)
PERCENTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))

# Rules whose findings each visual shows the evidence of (the report puts the chart next to them).
SUPPORTS: dict[str, tuple[str, ...]] = {
    "utilization-heatmap": ("idle-overload-oscillation", "slot-locking", "batch-scheduling-conflict",
                            "interconnect-capacity-inaccessibility", "sla-degradation-without-shortage",
                            "idle-memory-hold"),
    "disruption-timeline": ("burst-amplification", "retry-amplification", "queue-wait-dominance",
                            "sla-degradation-without-shortage", "idle-overload-oscillation", "batch-scheduling-conflict",
                            "arrival-burstiness", "arrival-rate-shift", "token-load-burst"),
    "wave-propagation": ("burst-amplification", "retry-amplification", "queue-wait-dominance"),
    "synchronization-map": ("interconnect-capacity-inaccessibility", "virtualization-control-distortion",
                            "memory-path-incoherence", "queue-wait-dominance"),
    "hidden-capacity": ("sla-degradation-without-shortage", "slot-locking", "batch-scheduling-conflict",
                        "memory-path-incoherence", "idle-overload-oscillation", "idle-memory-hold"),
    "stragglers": ("latency-asymmetry-drift", "virtualization-control-distortion", "memory-path-incoherence"),
    "energy-latency": ("energy-latency-mismatch",),
    "latency-ecdf": ("migration-reconfiguration-risk", "latency-asymmetry-drift", "sla-degradation-without-shortage"),
    "before-after": ("migration-reconfiguration-risk",),
}


# A request whose execution was useful work, as metrics' effective utilization counts it: an
# inference request that met its SLO, a batch job that completed.
_USEFUL = pl.when(is_inference()).then(pl.col("slo_met").fill_null(False)).otherwise(pl.col("outcome") == "completed")


@dataclass(frozen=True)
class Clock:
    """The shared time grid: `bins` bins of `bin_ns` from `t0_ns` (an analysis-window start)."""

    t0_ns: int
    bin_ns: int
    bins: int

    @classmethod
    def over(cls, start_ns: int, end_ns: int, window_ns: int, max_bins: int) -> Clock:
        """At most `max_bins` bins, each a whole number of analysis windows, covering [start, end]."""
        t0 = start_ns // window_ns * window_ns
        windows = (end_ns - t0) // window_ns + 1
        bin_ns = window_ns * max(1, math.ceil(windows / max_bins))
        return cls(t0, bin_ns, (end_ns - t0) // bin_ns + 1)

    def bin(self, ts: pl.Expr) -> pl.Expr:
        return ((ts - self.t0_ns) // self.bin_ns).clip(0, self.bins - 1)

    def grid(self) -> pl.LazyFrame:
        return pl.LazyFrame({"_bin": pl.int_range(0, self.bins, eager=True, dtype=pl.Int64)})

    def start_s(self) -> pl.Expr:
        return (pl.col("_bin") * self.bin_ns / 1e9).alias("bin_start_s")

    def end_s(self) -> pl.Expr:
        return ((pl.col("_bin") + 1) * self.bin_ns / 1e9).alias("bin_end_s")

    def seconds(self, ns: int) -> float:
        return round((ns - self.t0_ns) / 1e9, 3)

    @property
    def bin_s(self) -> float:
        return self.bin_ns / 1e9


class VisualInputs:
    """What the visuals read from one analysis, built once and shared between them."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.report = analysis.report
        self.layers = Layers.of(analysis.trace.layers)
        self.columns = set(analysis.trace.columns)
        self.window_ns = max(1, int(round(self.report.window_s * 1e9)))
        self.fired = frozenset(f.rule for f in self.report.findings)
        # The span of every validated row, taken before the analysis projected its layers.
        span = analysis.span if analysis.span is not None else metrics.observation_span(self.layers)
        self.span = None if span.start_ns is None or span.end_ns is None else (int(span.start_ns), int(span.end_ns))
        self._timelines: dict[Clock, pl.DataFrame] = {}

    def clock(self, max_bins: int) -> Clock | None:
        return None if self.span is None else Clock.over(*self.span, self.window_ns, max_bins)

    def origin_utc(self) -> str | None:
        clock = self.clock(HEATMAP_BINS)
        return None if clock is None else iso_utc(clock.t0_ns)

    def layer(
        self, name: str, columns: Iterable[str] | None = None, *, events: Iterable[str] | None = None, ordered: bool = True
    ) -> pl.DataFrame | None:
        """As FeatureContext.layer: the rows and columns a visual reads, None without such rows."""
        return self.layers.read(name, columns, events=events, ordered=ordered) if self.layers.has_rows(name) else None

    @cached_property
    def context(self) -> FeatureContext:
        """The analysis' own feature context, whose shared tables (fleet windows, WPI's stress
        excursions, ...) the features already built: the visuals show what the rules read, and
        do not compute it twice. An analysis without one gets a fresh context over its frames."""
        if self.analysis.context is not None:
            return self.analysis.context
        return FeatureContext(
            requests=self.analysis.paths,
            layers=self.layers,
            columns=self.columns,
            metrics=self.report.metrics,
            window_s=self.report.window_s,
            series_factory=lambda: self.analysis.series,
        )

    @cached_property
    def inference(self) -> pl.LazyFrame:
        return self.analysis.paths.lazy().filter(is_inference())

    @cached_property
    def fleet(self) -> FleetWindows | None:
        return fleet_windows(self.context)

    @cached_property
    def excursions(self) -> tuple[pl.DataFrame, pl.DataFrame] | None:
        """WPI's scored stress series and excursion episodes (indices.stress_excursions)."""
        return indices.stress_excursions(self.context)

    @cached_property
    def excursion_origin_ns(self) -> int:
        """Window 0 of the WPI series: the first arrival (as in indices.py)."""
        first = self.analysis.paths.select(pl.col("arrive_ns").min()).item()
        return int(first) if first is not None else 0

    def useful_exec_per_device(self, spans: pl.LazyFrame, ns: pl.Expr) -> pl.LazyFrame:
        """(device as text, _useful): integer ns of useful exec time per device: the prefill exec
        time of useful requests to their prefill device, the decode time to their decode device,
        and batch spans that carry no request."""
        requests = self.analysis.paths.lazy().filter(_USEFUL)
        parts = [
            requests.filter(pl.col(f"{phase}_device").is_not_null() & pl.col(f"{phase}_exec_ms").is_not_null())
            .group_by(pl.col(f"{phase}_device").alias("device"))
            .agg((pl.col(f"{phase}_exec_ms") * NS_PER_MS).round().cast(pl.Int64).sum().alias("_useful"))
            .with_columns(pl.col("device").cast(pl.String))  # names cast after grouping: one per device, not per row
            for phase in ("prefill", "decode")
        ]
        parts.append(
            spans.filter(pl.col("request_key").is_null() & (pl.col("phase") == "batch_job").fill_null(False))
            .group_by("device").agg(ns.sum().alias("_useful")).with_columns(pl.col("device").cast(pl.String))
        )
        return pl.concat(parts).group_by("device").agg(pl.col("_useful").sum())

    def timeline(self, clock: Clock) -> pl.DataFrame:
        """`timeline_frame` on `clock`, computed once (the timeline and energy views read it)."""
        if clock not in self._timelines:
            self._timelines[clock] = timeline_frame(self, clock)
        return self._timelines[clock]

    def rule_if_fired(self, rule: str) -> str | None:
        return rule if rule in self.fired else None


_FIXED_ONE = float(1 << 32)  # fixed-point scale of order-free sums


def _exact_sum(expr: pl.Expr) -> pl.Expr:
    """Sum in fixed point (2**-32 resolution): integer addition, so the result does not depend on
    the order in which a parallel group-by meets the rows (float sums do, in the last bits)."""
    return (expr * _FIXED_ONE).round().cast(pl.Int64).sum() / _FIXED_ONE


def _exact_mean(expr: pl.Expr) -> pl.Expr:
    return _exact_sum(expr) / expr.count()


def _omitted(visual_id: str, title: str, kind: VisualKind, reason: str, origin: str | None = None) -> Visual:
    return Visual(visual_id, title, "", kind, None, reason, SUPPORTS[visual_id], time_origin_utc=origin)


def _table(frame: pl.DataFrame, digits: int = 4) -> VisualTable:
    """A VisualTable of a small aggregate frame: floats rounded (so that last-bit differences of
    parallel sums never reach a chart), NaN as null."""
    rounded = frame.with_columns(
        pl.col(c).fill_nan(None).round(digits) for c, t in frame.schema.items() if t.is_float()
    )
    return VisualTable(tuple(rounded.columns), tuple(rounded.rows()))


def build_visuals(
    analysis: Analysis, comparison: Comparison | None = None, *, baseline: Analysis | None = None
) -> tuple[Visual, ...]:
    """Every visual of the report, in the report's order; each defined or omitted with a reason.

    `comparison` (compare.py) adds the before/after view; `baseline` (the analysis of the
    comparison's base side) adds its latency distribution to the ECDF view."""
    return tuple(iter_visuals(analysis, comparison, baseline=baseline))


def iter_visuals(analysis: Analysis, comparison: Comparison | None = None, *, baseline: Analysis | None = None) -> Iterator[Visual]:
    """The visuals of `build_visuals`, each as soon as it is computed (a caller can draw one
    while the next is computed)."""
    inputs = VisualInputs(analysis)
    yield utilization_heatmap(inputs)
    yield disruption_timeline(inputs)
    yield wave_propagation(inputs)
    yield synchronization_map(inputs)
    yield hidden_capacity(inputs)
    yield stragglers(inputs)
    yield energy_latency(inputs)
    yield latency_distributions(inputs, baseline)
    yield before_after(comparison)


# --- utilization heatmap ------------------------------------------------------------------------


# gpu_util samples, exec spans and their requests (useful_exec_per_device reads `phase` too).
_HEATMAP_COLUMNS = ("ts", "event", "device", "request_key", "dur_ms", "phase", "gpu_util")


def utilization_heatmap(inputs: VisualInputs) -> Visual:
    vid, title = "utilization-heatmap", "Nominal vs effective utilization per device over time"
    kind: VisualKind = "heatmap"
    # Samples and exec spans are filtered apart below: their interleaving does not matter.
    gpu, clock, origin = inputs.layer("gpu", _HEATMAP_COLUMNS, ordered=False), inputs.clock(HEATMAP_BINS), inputs.origin_utc()
    if gpu is None or clock is None:
        return _omitted(vid, title, kind, "no gpu layer: device utilization needs gpu samples (gpu_util) or exec spans (dur_ms)", origin)
    has_util = "gpu_util" in gpu.columns and gpu.select(((pl.col("event") == "sample") & pl.col("gpu_util").is_not_null()).any()).item()
    has_spans = "dur_ms" in gpu.columns and gpu.select((pl.col("event") == "exec").any()).item()
    if not (has_util or has_spans):
        return _omitted(vid, title, kind, "the gpu layer has neither gpu_util samples nor exec spans (dur_ms)", origin)
    samples = gpu.lazy().filter((pl.col("event") == "sample") & pl.col("gpu_util").is_not_null() & pl.col("device").is_not_null())
    spans = gpu.lazy().filter((pl.col("event") == "exec") & pl.col("device").is_not_null())
    ns = (pl.col("dur_ms") * NS_PER_MS).round().cast(pl.Int64)
    with_effective = has_spans and "slo_ms" in inputs.columns
    # Which devices: ranked by their hidden capacity over the whole trace (mean nominal x the
    # share of their exec time that was not useful), computed per device; the per-bin cells
    # only for the devices shown (a fleet of thousands of devices costs one group-by per device).
    # A device's useful time comes from the request table, as metrics' effective utilization
    # takes it: the prefill and decode exec time of useful requests, to their devices.
    if has_util:
        source = "mean gpu_util sample"
        nominal_per_device = samples.group_by("device").agg(_exact_mean(pl.col("gpu_util")).alias("_nom"))
    else:
        source = "exec busy time"
        span_ns = max(1, clock.bins * clock.bin_ns)
        nominal_per_device = spans.group_by("device").agg((ns.sum() / span_ns).clip(0.0, 1.0).alias("_nom"))
    ranking = nominal_per_device.with_columns(pl.col("device").cast(pl.String))
    if with_effective:
        total = spans.group_by("device").agg(ns.sum().alias("_total")).with_columns(pl.col("device").cast(pl.String))
        ranking = ranking.join(total, on="device", how="left").join(inputs.useful_exec_per_device(spans, ns), on="device", how="left")
        ranking = ranking.with_columns(
            (pl.col("_nom") * (1.0 - (pl.col("_useful").fill_null(0) / pl.col("_total")).clip(0.0, 1.0).fill_null(0.0))).alias("_gap")
        )
    else:
        ranking = ranking.with_columns(pl.col("_nom").alias("_gap"))
    ranked = (
        ranking.select("device", "_gap", "_nom").collect()
        .sort(["_gap", "_nom", "device"], descending=[True, True, False], nulls_last=True)
    )
    shown = ranked.head(TOP_DEVICES)["device"]
    mine = pl.col("device").is_in(shown.implode())  # on the Categorical: no per-row cast to text

    keys = ["device", "_bin"]
    if has_util:
        per_bin = samples.filter(mine).group_by("device", clock.bin(pl.col("ts")).alias("_bin")).agg(
            _exact_mean(pl.col("gpu_util")).alias("nominal_frac")
        )
    else:
        shifted = gpu.lazy().filter(mine).with_columns(pl.col("ts") - clock.t0_ns)  # bins counted from t0
        per_bin = busy_intervals(shifted, clock.bin_ns).select(
            "device", (pl.col("window_start_ns") // clock.bin_ns).alias("_bin"), pl.col("busy_frac").alias("nominal_frac")
        )
    effective_note = ""
    if with_effective:
        # The shown devices' spans (a few thousand rows) looked up in the request table's flags.
        flags = inputs.analysis.paths.lazy().select("request_key", _USEFUL.alias("_flag"))
        batch_work = pl.col("request_key").is_null() & (pl.col("phase") == "batch_job").fill_null(False)
        share = (
            spans.filter(mine)
            .join(flags, on="request_key", how="left")
            .select(
                "device", clock.bin(pl.col("ts")).alias("_bin"), ns.alias("_ns"), (pl.col("_flag").fill_null(False) | batch_work).alias("_useful")
            )
            .group_by(keys)
            .agg((pl.col("_ns").filter("_useful").sum() / pl.col("_ns").sum()).alias("_share"))
        )
        per_bin = per_bin.join(share, on=keys, how="left").with_columns(
            (pl.col("nominal_frac") * pl.col("_share")).clip(0.0, 1.0).alias("effective_frac")
        )
    else:
        effective_note = (" Effective utilization is undefined here: "
                          + ("requests carry no latency objective (slo_ms)." if has_spans else "no exec spans (dur_ms)."))
        per_bin = per_bin.with_columns(pl.lit(None, pl.Float64).alias("effective_frac"))
    table = (
        per_bin.with_columns(pl.col("device").cast(pl.String)).collect()
        .join(pl.DataFrame({"device": shown, "_rank": pl.int_range(0, shown.len(), eager=True)}), on="device")
        .sort("_rank", "_bin")
        .select("device", clock.start_s(), clock.end_s(), "nominal_frac", "effective_frac")
    )
    caption = (
        f"Nominal utilization ({source}) beside effective utilization (nominal x the share of exec time that served "
        f"requests within their SLO or completed batch work), per device in {clock.bins} bins of {clock.bin_s:g} s. "
        f"Look for devices dark on the left and light on the right: busy but not productive (hidden capacity). "
        f"{shown.len()} of {ranked.height} devices shown, the largest hidden capacity over the whole trace first (mean "
        f"nominal x the share of the device's exec time not spent on useful requests); blank: no sample, or no exec span "
        f"started in that bin.{effective_note}"
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid], time_origin_utc=origin)


# --- disruption timeline ------------------------------------------------------------------------


def _percentiles(column: str) -> list[pl.Expr]:
    return [pl.col(column).quantile(q, "linear").alias(f"{column.removesuffix('_ms')}_{name}_ms") for q, name in PERCENTILES]


def timeline_frame(inputs: VisualInputs, clock: Clock) -> pl.DataFrame:
    """Per time bin: latency, TTFT and queue-wait percentiles, arrivals, queue depth, SLO misses
    and failures (timeouts and drops) of inference requests; every bin of the grid present."""
    inf = inputs.inference
    completed = inf.filter((pl.col("outcome") == "completed") & pl.col("complete_ns").is_not_null())
    ended = pl.coalesce("complete_ns", "final_start_ns", "arrive_ns")  # as the pool series (timeseries.py)
    parts = [
        completed.group_by(clock.bin(pl.col("complete_ns")).alias("_bin")).agg(*_percentiles("latency_ms"), *_percentiles("ttft_ms")),
        inf.filter(pl.col("dispatch_ns").is_not_null()).group_by(clock.bin(pl.col("dispatch_ns")).alias("_bin")).agg(*_percentiles("queue_wait_ms")),
        inf.filter(pl.col("arrive_ns").is_not_null()).group_by(clock.bin(pl.col("arrive_ns")).alias("_bin")).agg(
            (pl.len() / clock.bin_s).alias("arrivals_per_s")
        ),
        inf.filter(pl.col("outcome") != "unfinished").group_by(clock.bin(ended).alias("_bin")).agg(
            pl.col("slo_met").not_().sum().cast(pl.Int64).alias("slo_miss_count"),  # null (no objective) counts nowhere
            pl.col("outcome").is_in(["timeout", "dropped"]).sum().cast(pl.Int64).alias("failed_count"),
        ),
    ]
    fw = inputs.fleet
    if fw is not None and fw.depth is not None:
        depth = pl.LazyFrame({"_ts": fw.start_ns, "_depth": fw.depth}).with_columns(pl.col("_depth").fill_nan(None))
        parts.append(depth.group_by(clock.bin(pl.col("_ts")).alias("_bin")).agg(_exact_mean(pl.col("_depth")).alias("queue_depth_count")))
    frame = clock.grid()
    for part in parts:
        frame = frame.join(part, on="_bin", how="left")
    frame = frame.with_columns(pl.col("slo_miss_count", "failed_count").fill_null(0), pl.col("arrivals_per_s").fill_null(0.0))
    if "queue_depth_count" not in frame.collect_schema().names():
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("queue_depth_count"))
    if "slo_ms" not in inputs.columns:
        frame = frame.with_columns(pl.lit(None, pl.Int64).alias("slo_miss_count"))
    return frame.sort("_bin").collect()


def disruption_timeline(inputs: VisualInputs) -> Visual:
    vid, title = "disruption-timeline", "Disruption timeline: percentiles, arrivals, queue and SLO misses"
    kind: VisualKind = "timeline"
    clock, origin = inputs.clock(TIMELINE_BINS), inputs.origin_utc()
    arrived = inputs.inference.filter(pl.col("arrive_ns").is_not_null()).select(pl.len()).collect().item()
    if clock is None or not arrived:
        return _omitted(vid, title, kind, "no inference requests with an arrival time (scheduler arrive rows)", origin)
    frame = inputs.timeline(clock)
    table = frame.select(
        clock.start_s(),
        clock.end_s(),
        *[f"{s}_{p}_ms" for s in ("latency", "ttft", "queue_wait") for _, p in PERCENTILES],
        "arrivals_per_s", "queue_depth_count", "slo_miss_count", "failed_count",
    )
    episodes = _cap_episodes(_fleet_episodes(inputs, clock) + _excursion_episodes(inputs, clock, kinds=("stall", "wave")))
    fw = inputs.fleet
    depth = (f"queue depth from {fw.depth_source}" if fw is not None and fw.depth_source else "no queue depth (no queue samples or dispatch times)")
    caption = (
        f"Per {clock.bin_s:g} s bin: p50/p95/p99 of end-to-end latency and TTFT (by completion time) and of queue wait "
        f"(by dispatch time), fresh arrivals per second, {depth}, SLO misses and failed requests (timeouts, drops). "
        "Shaded bands mark bursts and their backlog, retry storms, and excursions of the wave series. Read it left to "
        "right: burst -> queue saturation -> latency cascade -> recovery."
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid], episodes, origin)


def _window_span(fw: FleetWindows, first: int, end: int, clock: Clock) -> tuple[float, float]:
    """Seconds of fleet windows [first, end) (end may be fw.n: up to the last window's end)."""
    stop = int(fw.start_ns[end]) if end < fw.n else int(fw.start_ns[-1]) + fw.w_ns
    return clock.seconds(int(fw.start_ns[first])), clock.seconds(stop)


def _fleet_episodes(inputs: VisualInputs, clock: Clock) -> list[Episode]:
    """Bursts (with their backlog) and retry storms, as features/burst_amplification.py and
    retry_amplification.py find them."""
    fw = inputs.fleet
    if fw is None or fw.n == 0:
        return []
    out: list[Episode] = []
    rule = inputs.rule_if_fired("burst-amplification")
    bursts = burst_episodes(fw)
    if bursts:
        for ep in bursts:
            ratio = f"{ep.peak_ratio:.1f}x the median arrivals" if ep.peak_ratio is not None else "arrival burst"
            start, end = _window_span(fw, ep.first, ep.last + 1, clock)
            out.append(Episode("burst", start, end, f"burst: {ratio}", rule))
            if ep.settle > ep.last + 1:
                b_start, b_end = _window_span(fw, ep.last + 1, ep.settle, clock)
                out.append(Episode("backlog", b_start, b_end, f"backlog: queue {ep.peak_depth_excess:.0f} above its pre-burst level", rule))
    else:  # no queue depth to follow the backlog: the burst windows alone
        mask, med = burst_mask(fw)
        for first, last in runs(mask, max_gap=1):
            start, end = _window_span(fw, first, last + 1, clock)
            peak = float(fw.arrivals[first : last + 1].max())
            out.append(Episode("burst", start, end, f"burst: {peak / med:.1f}x the median arrivals" if med > 0 else "burst", rule))
    if float(np.sum(fw.retries)) > 0:
        storm_rule = inputs.rule_if_fired("retry-amplification")
        for first, last in runs(retry_storm(fw)):
            start, end = _window_span(fw, first, last + 1, clock)
            retries = float(fw.retries[first : last + 1].sum())
            out.append(Episode("retry_storm", start, end, f"retry storm: {retries:.0f} retries", storm_rule))
    return out


def _excursion_episodes(inputs: VisualInputs, clock: Clock, kinds: tuple[str, ...]) -> list[Episode]:
    """WPI's excursion episodes: `stall` for service-time series, `wave` for the others."""
    scored = inputs.excursions
    if scored is None:
        return []
    _, episodes = scored
    w = inputs.window_ns
    o = inputs.excursion_origin_ns
    out = []
    for entity, start, end, peak in episodes.select("entity", "start", "end", "peak").rows():  # episodes, not trace rows
        kind = "stall" if entity.startswith("service:") else "wave"
        if kind in kinds:
            out.append(Episode(kind, clock.seconds(o + start * w), clock.seconds(o + (end + 1) * w),  # type: ignore[arg-type]
                               f"excursion of {entity}: robust z {peak:.1f}"))
    return out


def _cap_episodes(episodes: list[Episode]) -> tuple[Episode, ...]:
    """At most EPISODES_PER_KIND per kind (the longest) and MAX_EPISODES in all, in time order."""
    kept: list[Episode] = []
    for kind in ("burst", "backlog", "retry_storm", "stall", "wave"):
        mine = sorted((e for e in episodes if e.kind == kind), key=lambda e: (-(e.end_s - e.start_s), e.start_s, e.label))
        kept.extend(mine[:EPISODES_PER_KIND])
    return tuple(sorted(kept, key=lambda e: (e.start_s, e.kind, e.label))[:MAX_EPISODES])


# --- wave propagation ---------------------------------------------------------------------------


def wave_propagation(inputs: VisualInputs) -> Visual:
    vid, title = "wave-propagation", "Wave propagation: stress excursions per series over time"
    kind: VisualKind = "wave"
    clock, origin = inputs.clock(HEATMAP_BINS), inputs.origin_utc()
    scored = inputs.excursions if clock is not None else None
    if clock is None or scored is None:
        why = inputs.report.evaluability.get("WPI")
        reason = why.reason if why is not None and why.reason else "needs at least two stress series"
        return _omitted(vid, title, kind, f"WPI is not evaluable: {reason}", origin)
    flagged, _ = scored
    w, o = inputs.window_ns, inputs.excursion_origin_ns
    per_bin = (
        flagged.lazy()
        .group_by("entity", clock.bin(pl.lit(o) + pl.col("w") * w).alias("_bin"))
        .agg(pl.col("z").max().clip(0.0, 50.0).alias("excursion_z"), pl.col("hot").sum().cast(pl.Int64).alias("hot_windows_count"))
        .collect()
    )
    ranking = per_bin.group_by("entity").agg(pl.col("excursion_z").max().alias("_peak")).sort(["_peak", "entity"], descending=[True, False])
    shown = ranking.head(TOP_SERIES)["entity"]
    stage = pl.col("entity").str.extract(r"^([a-z_]+)", 1)
    table = (
        per_bin.filter(pl.col("entity").is_in(shown.implode()))
        .join(pl.DataFrame({"entity": shown, "_rank": pl.int_range(0, shown.len(), eager=True)}), on="entity")
        .sort("_rank", "_bin")
        .select(pl.col("entity").alias("series"), stage.alias("stage"), clock.start_s(), clock.end_s(), "excursion_z", "hot_windows_count")
    )
    wpi = inputs.report.indices.WPI
    episodes = _cap_episodes(_excursion_episodes(inputs, clock, kinds=("stall", "wave")))
    caption = (
        f"Robust z-score (max per {clock.bin_s:g} s bin) of each stress series WPI reads: arrivals, queue waits, depth, "
        f"service time, latency and SLO misses per pool, link utilization. A window above z {indices.EXCURSION_Z:g} is an "
        "excursion; a wave shows as excursions starting in one series and spreading to others within seconds. "
        f"WPI {'n/a' if wpi is None else f'{wpi:.2f}'} over {inputs.report.index_breakdown.wave_episodes} excursion episodes; "
        f"{shown.len()} of {ranking.height} series shown, the largest excursion first."
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid], episodes, origin)


# --- synchronization map ------------------------------------------------------------------------


def synchronization_map(inputs: VisualInputs) -> Visual:
    vid, title = "synchronization-map", "Synchronization map: per-layer health and per-link alignment"
    kind: VisualKind = "sync_map"
    breakdown = inputs.report.index_breakdown
    rows = [(name, "layer", value) for name, value in breakdown.layers.items()] + [
        (name, "link", value) for name, value in breakdown.links.items()
    ]
    measured = [r for r in rows if r[2] is not None]
    if not measured:
        why = inputs.report.evaluability.get("CI")
        return _omitted(vid, title, kind, "no CI component is measurable" + (f": {why.reason}" if why and why.reason else ""))
    frame = pl.DataFrame(measured, schema={"component": pl.String, "kind": pl.String, "health_frac": pl.Float64}, orient="row")
    unmeasured = [r[0] for r in rows if r[2] is None]
    ci = inputs.report.indices.CI
    caption = (
        f"Each CI component in [0, 1] (1 = healthy): layer health of the scheduler, compute, network and serving layers "
        f"and the alignment of the links between them; CI {'n/a' if ci is None else f'{ci:.2f}'} is their geometric mean. "
        "Look for the weakest component: where the layers stop moving together. Below 0.65 is the bad range."
        + (f" Not measurable in this trace: {', '.join(unmeasured)}." if unmeasured else "")
    )
    return Visual(vid, title, caption, kind, _table(frame), None, SUPPORTS[vid])


# --- hidden capacity ----------------------------------------------------------------------------


def hidden_capacity(inputs: VisualInputs) -> Visual:
    vid, title = "hidden-capacity", "Hidden capacity: nominal vs effective utilization per pool"
    kind: VisualKind = "capacity"
    pools = {p: v["HCL"] for p, v in inputs.report.index_breakdown.pools.items() if v.get("HCL") is not None}
    gpu = inputs.layer("gpu", indices.NOMINAL_COLUMNS, events=("sample",)) if pools else None
    if not pools or gpu is None:
        missing = [c for c in ("gpu_util", "dur_ms", "slo_ms") if c not in inputs.columns]
        why = f"missing columns: {', '.join(missing)}" if missing else "no pool has both gpu_util samples and exec spans of its devices"
        return _omitted(vid, title, kind, f"per-pool hidden capacity loss (HCL) is not measurable: {why}")
    hcl = pl.DataFrame({"pool": list(pools), "hidden_frac": list(pools.values())}, schema={"pool": pl.String, "hidden_frac": pl.Float64})
    nominal = (
        indices.pool_nominal_utilization(gpu, indices.gpu_device_table(inputs.layer))
        .select(pl.col("pool").cast(pl.String), pl.col("nominal").alias("nominal_frac")).collect()
    )
    frame = hcl.join(nominal, on="pool", how="left").with_columns(
        (pl.col("nominal_frac") - pl.col("hidden_frac")).clip(0.0, 1.0).alias("effective_frac")
    )
    idle_note = ""
    windows = pool_windows(inputs.context) if inputs.layers.has_rows("queue") and "dur_ms" in inputs.columns else None
    if windows is not None and not windows.is_empty():
        w_s = inputs.window_ns / 1e9
        idle = (
            windows.lazy().filter(pl.col("depth") >= 1)
            .join(_pool_device_counts(inputs), on="pool", how="left")
            .group_by("pool")
            .agg(_exact_sum((1.0 - pl.col("busy")) * pl.col("_n_dev") * w_s).alias("idle_while_queued_s"))
            .collect()
        )
        frame = frame.join(idle, on="pool", how="left").with_columns(pl.col("idle_while_queued_s").fill_null(0.0))
        idle_note = (" Idle while queued: device-seconds the pool's devices sat idle in windows when its queues held at "
                     "least one request.")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("idle_while_queued_s"))
        idle_note = " Idle-while-queued time needs queue samples with a pool and exec spans (dur_ms); not measurable here."
    table = (
        frame.sort(["hidden_frac", "pool"], descending=[True, False]).head(TOP_POOLS)
        .select("pool", "nominal_frac", "effective_frac", "hidden_frac", "idle_while_queued_s")
    )
    hcl_value = inputs.report.indices.HCL
    caption = (
        f"Per pool: nominal utilization (mean gpu_util), effective utilization (the part that produced useful work) and "
        f"the gap between them, the pool's hidden capacity loss (fleet HCL {'n/a' if hcl_value is None else f'{hcl_value:.2f}'}). "
        f"A large gap with a queue waiting means capacity that is occupied but not serving.{idle_note}"
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid])


def _pool_device_counts(inputs: VisualInputs) -> pl.LazyFrame:
    devs = pool_devices(inputs.context)
    return devs.lazy().group_by(pl.col("pool").cast(pl.String)).agg(pl.len().alias("_n_dev"))


# --- stragglers ---------------------------------------------------------------------------------


def stragglers(inputs: VisualInputs) -> Visual:
    vid, title = "stragglers", "Stragglers: per-device service time against the fleet median"
    kind: VisualKind = "stragglers"
    tokens = {"prefill": "prompt_tokens", "decode": "output_tokens"}
    per_token = all(c in inputs.columns for c in tokens.values())
    value = "service_p50_ms_per_ktok" if per_token else "service_p50_ms"
    parts = []
    for phase, token_col in tokens.items():
        exec_ms = pl.col(f"{phase}_exec_ms")
        x = exec_ms * 1000.0 / pl.col(token_col) if per_token else exec_ms
        ok = pl.col(f"{phase}_device").is_not_null() & (exec_ms > 0) & ((pl.col(token_col) > 0) if per_token else pl.lit(True))
        parts.append(
            inputs.inference.filter(ok)
            .group_by(pl.col(f"{phase}_device").alias("device"), pl.col(f"{phase}_accelerator").alias("accelerator"))
            .agg(pl.len().alias("requests_count"), x.median().alias(value))
            .filter(pl.col("requests_count") >= MIN_DEVICE_REQUESTS)
            .select(pl.col("device").cast(pl.String), pl.col("accelerator").cast(pl.String).fill_null("(unknown)"),
                    pl.lit(phase).alias("phase"), "requests_count", value)
        )
    frame = pl.concat(parts).collect()
    if frame.is_empty():
        return _omitted(vid, title, kind, f"no device executed at least {MIN_DEVICE_REQUESTS} requests with attributed exec "
                        "spans (needs gpu exec spans with request_id and dur_ms)")
    frame = frame.with_columns(pl.col(value).median().over("phase").alias("fleet_p50_" + value.removeprefix("service_p50_")))
    fleet_col = frame.columns[-1]
    frame = frame.with_columns(
        pl.col(value).median().over("phase", "accelerator").alias("class_p50_" + value.removeprefix("service_p50_")),
        (pl.col(value) / pl.col(fleet_col)).alias("vs_fleet_median_ratio"),
    )
    table = frame.sort(["vs_fleet_median_ratio", "device", "phase"], descending=[True, False, False]).head(TOP_STRAGGLERS)
    unit = "per 1000 tokens (prompt tokens for prefill, output tokens for decode)" if per_token else "per request"
    caption = (
        f"Median execution time {unit} of each device and phase, against the fleet median of that phase (ratio 1 = "
        "typical) and the median of its accelerator class. A device well above its own class is a straggler; a whole "
        f"class above the fleet is an accelerator-generation effect. {table.height} of {frame.height} device-phase rows "
        f"shown (at least {MIN_DEVICE_REQUESTS} requests each), the slowest first."
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid])


# --- energy vs latency --------------------------------------------------------------------------


# Every row: whether the trace has power readings at all is asked of every gpu row.
_POWER_COLUMNS = ("ts", "event", "device", "power_w")


def energy_latency(inputs: VisualInputs) -> Visual:
    vid, title = "energy-latency", "Energy vs latency over time"
    kind: VisualKind = "energy"
    # Only sample rows are aggregated below (any row's power tells whether there is any).
    gpu, clock, origin = inputs.layer("gpu", _POWER_COLUMNS, ordered=False), inputs.clock(TIMELINE_BINS), inputs.origin_utc()
    has_power = gpu is not None and "power_w" in gpu.columns and gpu.select(pl.col("power_w").is_not_null().any()).item()
    if gpu is None or not has_power or clock is None:
        return _omitted(vid, title, kind, "no board power samples (gpu power_w)", origin)
    power = (  # one group per bin (not per device and bin: thousands of devices in a large fleet)
        gpu.lazy().filter((pl.col("event") == "sample") & pl.col("power_w").is_not_null() & pl.col("device").is_not_null())
        .group_by(clock.bin(pl.col("ts")).alias("_bin"))
        .agg(_exact_mean(pl.col("power_w")).alias("power_mean_w"), pl.len().cast(pl.Int64).alias("power_samples_count"))
    )
    latency = inputs.timeline(clock).select("_bin", "latency_p50_ms", "latency_p95_ms")
    table = (
        clock.grid().join(power, on="_bin", how="left").join(latency.lazy(), on="_bin", how="left")
        .sort("_bin").select(clock.start_s(), clock.end_s(), "power_mean_w", "latency_p50_ms", "latency_p95_ms", "power_samples_count").collect()
        .with_columns(pl.col("power_samples_count").fill_null(0).cast(pl.Int64))
    )
    values = inputs.analysis.feature_values.values if inputs.analysis.feature_values is not None else {}
    corr = values.get("power_latency_rank_corr")
    caption = (
        f"Mean board power over the bin's power samples (of all sampled devices) and end-to-end latency (p50, p95) "
        f"per {clock.bin_s:g} s bin. "
        "Power that stays flat while latency swings is the energy-latency mismatch: the devices draw the same watts "
        "whether they serve well or not."
        + (f" Rank correlation of power and latency over windows: {corr:.2f}." if corr is not None else "")
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid], time_origin_utc=origin)


# --- latency distributions ----------------------------------------------------------------------


_GRID_SCHEMA = {"group": pl.String, "quantile_frac": pl.Float64, "latency_ms": pl.Float64, "requests_count": pl.Int64}


def _quantile_grid(rows: pl.LazyFrame, group: pl.Expr, top: int = TOP_GROUPS) -> tuple[pl.DataFrame, int]:
    """(group, quantile_frac, latency_ms, requests_count) on QUANTILE_GRID for the `top` groups
    with the most requests (then by name), and the number of groups. Each group's quantiles come
    from one selection in numpy (linear interpolation, as Polars' "linear"), not one sort per level."""
    frame = rows.select(group.alias("group"), "latency_ms").collect()
    counts = frame.group_by("group").len("requests_count").sort(["requests_count", "group"], descending=[True, False])
    out = []
    for name, count in counts.head(top).iter_rows():  # at most `top` groups, not trace rows
        values = frame.filter(pl.col("group") == name)["latency_ms"].to_numpy()
        levels = np.quantile(values, QUANTILE_GRID, method="linear")
        n = len(QUANTILE_GRID)
        columns = {"group": [name] * n, "quantile_frac": list(QUANTILE_GRID), "latency_ms": levels, "requests_count": [count] * n}
        out.append(pl.DataFrame(columns, schema=_GRID_SCHEMA))
    return pl.concat(out), counts.height


def _completed_latency(analysis: Analysis) -> pl.LazyFrame:
    return analysis.paths.lazy().filter(is_inference() & (pl.col("outcome") == "completed") & pl.col("latency_ms").is_not_null())


def latency_distributions(inputs: VisualInputs, baseline: Analysis | None = None) -> Visual:
    vid, title = "latency-ecdf", "Latency distributions (ECDF)"
    kind: VisualKind = "ecdf"
    done = _completed_latency(inputs.analysis)
    if not done.select(pl.len()).collect().item():
        return _omitted(vid, title, kind, "no completed inference request with an end-to-end latency")
    if baseline is not None:
        base = _completed_latency(baseline)
        if not base.select(pl.len()).collect().item():
            return _omitted(vid, title, kind, "the baseline has no completed inference request with an end-to-end latency")
        frame = pl.concat([_quantile_grid(base, pl.lit("baseline"))[0], _quantile_grid(done, pl.lit("this trace"))[0]])
        groups = 2
        by = "the baseline against this trace"
    else:
        envs = done.select(pl.col("env").drop_nulls().n_unique()).collect().item()
        column = "env" if envs >= 2 else "pool"
        frame, groups = _quantile_grid(done, pl.col(column).cast(pl.String).fill_null(f"(no {column})"))
        by = f"per {column}"
    order = frame.group_by("group").agg(pl.col("requests_count").first()).sort(["requests_count", "group"], descending=[True, False])
    shown = order["group"]
    table = (
        frame.join(pl.DataFrame({"group": shown, "_rank": pl.int_range(0, shown.len(), eager=True)}), on="group")
        .sort("_rank", "quantile_frac")
        .select("group", "quantile_frac", "latency_ms", "requests_count")
    )
    caption = (
        f"Empirical distribution of end-to-end latency of completed inference requests, {by}, on a fixed grid of "
        f"{len(QUANTILE_GRID)} quantiles (1% to 99%, then 99.5% and 99.9%). A curve further right is slower; a long "
        f"flat top is a heavy tail. {shown.len()} of {groups} groups shown, the most requests first."
    )
    return Visual(vid, title, caption, kind, _table(table), None, SUPPORTS[vid])


# --- before / after -----------------------------------------------------------------------------


def before_after(comparison: Comparison | None) -> Visual:
    vid, title = "before-after", "Before / after: every measure of the two sides"
    kind: VisualKind = "before_after"
    if comparison is None:
        return _omitted(vid, title, kind, "no baseline given: the before/after view compares two traces (report --baseline TRACE)")
    rows = [
        (m.label, m.unit, m.base, m.candidate, m.relative_change, m.change)
        for m in comparison.measures
        if m.base is not None or m.candidate is not None
    ]
    if not rows:
        return _omitted(vid, title, kind, "no measure is defined on either side of the comparison")
    frame = pl.DataFrame(
        rows,
        schema={"measure": pl.String, "unit": pl.String, "base_value": pl.Float64, "candidate_value": pl.Float64,
                "relative_change_frac": pl.Float64, "change": pl.String},
        orient="row",
    )
    caption = (
        f"Each measure of the report on the base ({comparison.base.label}) and the candidate ({comparison.candidate.label}) "
        "side, with its relative change; colour says whether it moved the better or the worse way (or within noise)."
    )
    return Visual(vid, title, caption, kind, _table(frame), None, SUPPORTS[vid])
