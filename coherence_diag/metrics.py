"""Classical serving metrics (report-contract `metrics`), defined precisely in docs/metrics.md.

Latency-type metrics cover inference requests only (`workload_class` other than `batch`; a
missing class counts as inference): batch jobs are throughput work and would swamp the tails.
Quantiles use linear interpolation between order statistics (numpy's default), so they can be
checked against numpy on the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import polars as pl

from coherence_diag.layer_store import Layers
from coherence_diag.model import Evaluability, Metrics, Quantiles, RequestCounts
from coherence_diag.paths import NS_PER_MS, exact_ms_sum, is_inference
from coherence_diag.timeseries import busy_intervals

QUANTILES = (0.50, 0.95, 0.99)


@dataclass(frozen=True)
class ObservationSpan:
    start_ns: int | None
    end_ns: int | None
    # First and last `ts` of the scheduler rows (rates are per second of scheduling), taken with
    # the span from every row: after the request paths the analysis keeps only some of them.
    scheduler_start_ns: int | None = None
    scheduler_end_ns: int | None = None

    @property
    def seconds(self) -> float | None:
        if self.start_ns is None or self.end_ns is None or self.end_ns <= self.start_ns:
            return None
        return (self.end_ns - self.start_ns) / 1e9


def observation_span(layers: Mapping[str, pl.DataFrame]) -> ObservationSpan:
    """First and last instant covered by any clean row (span rows count to their end)."""
    starts, ends = [], []
    scheduler: tuple[int | None, int | None] = (None, None)
    for name, frame in layers.items():
        if frame.is_empty():
            continue
        end = pl.col("ts")
        if "dur_ms" in frame.columns:
            end = pl.col("ts") + (pl.col("dur_ms").fill_null(0.0) * NS_PER_MS).cast(pl.Int64)
        bounds = frame.select(pl.col("ts").min().alias("a"), end.max().alias("b"), pl.col("ts").max().alias("c")).row(0)
        starts.append(bounds[0])
        ends.append(bounds[1])
        if name == "scheduler":
            scheduler = (bounds[0], bounds[2])
    starts = [s for s in starts if s is not None]
    ends = [e for e in ends if e is not None]
    return ObservationSpan(min(starts) if starts else None, max(ends) if ends else None, *scheduler)


def compute(
    requests: pl.DataFrame,
    layers: Mapping[str, pl.DataFrame],
    columns: set[str],
    span: ObservationSpan,
) -> tuple[Metrics, dict[str, Evaluability]]:
    evaluability: dict[str, Evaluability] = {}
    store = Layers.of(layers)
    # Narrow before filtering: a filter gathers every column it is given.
    used = ["workload_class", "outcome", "latency_ms", "queue_wait_ms", "ttft_ms", "slo_ms", "slo_met"]
    inference = requests.select(used).filter(is_inference())
    finished = inference.filter(pl.col("outcome") != "unfinished")

    quantiles = _quantiles(
        inference,
        latency_ms=pl.col("latency_ms").filter(pl.col("outcome") == "completed"),
        queue_wait_ms=pl.col("queue_wait_ms"),
        ttft_ms=pl.col("ttft_ms"),
    )

    n_finished = finished.height
    counts = _counts(requests)
    rate = (lambda n: n / n_finished) if n_finished else (lambda n: None)
    with_slo = finished.filter(pl.col("slo_ms").is_not_null())
    slo_met = int(with_slo["slo_met"].sum()) if with_slo.height else 0
    seconds = _scheduler_seconds(span) or span.seconds

    slo_attainment = slo_met / with_slo.height if with_slo.height else None
    goodput = slo_met / seconds if (with_slo.height and seconds) else None
    if "slo_ms" not in columns:
        for name in ("slo_attainment", "goodput_rps"):
            evaluability[f"metrics.{name}"] = Evaluability(False, ("slo_ms",), "requests carry no latency objective")

    nominal, source, missing_nominal = _nominal_utilization(store, span)
    if nominal is None:
        evaluability["metrics.nominal_utilization"] = Evaluability(
            False, missing_nominal, "no GPU utilization samples and no execution spans"
        )
    effective, missing_effective, why = _effective_utilization(nominal, requests, store, columns)
    if effective is None:
        evaluability["metrics.effective_utilization"] = Evaluability(False, missing_effective, why)

    metrics = Metrics(
        latency_ms=Quantiles(*(quantiles[f"latency_ms_{q}"] for q in ("p50", "p95", "p99"))),
        queue_wait_ms=Quantiles(*(quantiles[f"queue_wait_ms_{q}"] for q in ("p50", "p95", "p99"))),
        ttft_ms=Quantiles(*(quantiles[f"ttft_ms_{q}"] for q in ("p50", "p95", "p99"))),
        nominal_utilization=nominal,
        effective_utilization=effective,
        timeout_rate=rate(counts_of(finished, "timeout")),
        drop_rate=rate(counts_of(finished, "dropped")),
        slo_attainment=slo_attainment,
        goodput_rps=goodput,
        throughput_rps=(counts_of(finished, "completed") / seconds) if seconds else None,
        nominal_utilization_source=source,
        requests=counts,
    )
    return metrics, evaluability


def counts_of(frame: pl.DataFrame, outcome: str) -> int:
    return int((frame["outcome"] == outcome).sum())


def _ns(ms: pl.Expr) -> pl.Expr:
    return (ms * NS_PER_MS).round().cast(pl.Int64)


def _quantiles(frame: pl.DataFrame, **values: pl.Expr) -> dict[str, float | None]:
    """{name_p50, name_p95, name_p99} for each named expression. All QUANTILES of a column in one
    `quantile` call (a list of levels): one sort per column instead of one per level, with the
    same values."""
    row = frame.select(
        expr.quantile(list(QUANTILES), interpolation="linear").alias(name) for name, expr in values.items()
    ).row(0, named=True)
    return {
        f"{name}_p{int(round(q * 100))}": value
        for name, levels in row.items()
        for q, value in zip(QUANTILES, levels)
    }


def _counts(requests: pl.DataFrame) -> RequestCounts:
    inference = is_inference()
    row = requests.select(
        pl.len().alias("total"),
        inference.sum().alias("inference"),
        (~inference).sum().alias("batch"),
        (inference & (pl.col("outcome") == "completed")).sum().alias("completed"),
        (inference & (pl.col("outcome") == "timeout")).sum().alias("timeout"),
        (inference & (pl.col("outcome") == "dropped")).sum().alias("dropped"),
        (inference & (pl.col("outcome") == "unfinished")).sum().alias("unfinished"),
        (inference & (pl.col("attempts") > 1)).sum().alias("retried"),
    ).row(0, named=True)
    return RequestCounts(**{k: int(v or 0) for k, v in row.items()})


def _scheduler_seconds(span: ObservationSpan) -> float | None:
    lo, hi = span.scheduler_start_ns, span.scheduler_end_ns
    return (hi - lo) / 1e9 if lo is not None and hi is not None and hi > lo else None


_FIXED_ONE = float(1 << 32)


def _fixed_point_sum(values: pl.Expr) -> pl.Expr:
    return (values * _FIXED_ONE).round().cast(pl.Int128).sum().cast(pl.Float64) / _FIXED_ONE


def _nominal_utilization(
    layers: Layers, span: ObservationSpan
) -> tuple[float | None, str | None, tuple[str, ...]]:
    """Mean over devices of each device's mean `gpu_util`; else exec busy time over device time."""
    if not layers.has_rows("gpu"):
        return None, None, ("gpu_util", "dur_ms")
    samples = cast(pl.DataFrame, layers.read("gpu", ("event", "device", "gpu_util"), events=("sample",)))
    per_device = (
        samples.lazy()
        .filter(pl.col("gpu_util").is_not_null())
        .select("device", "gpu_util")
        .group_by("device")
        # Each device's samples summed in fixed point (2**-32; Int128: no overflow): integer sums do
        # not depend on the order or chunks in which a group-by meets the rows, float sums do in
        # their last bits (seen: the same trace, analyzed twice in one process, differed).
        .agg((_fixed_point_sum(pl.col("gpu_util")) / pl.len()).alias("gpu_util"))
        .sort("device")  # so the final mean adds the per-device means in a fixed order (byte-identical output)
        .collect()
    )
    if per_device.height:
        value = per_device.select(pl.col("gpu_util").mean()).item()
        return float(value), "gpu_util", ()
    # Exec and device_info rows are filtered apart below: their interleaving does not matter.
    gpu = cast(pl.DataFrame, layers.read("gpu", ("ts", "event", "device", "dur_ms"), events=("exec", "device_info"), ordered=False))
    spans = gpu.filter(pl.col("event") == "exec")
    if spans.is_empty() or span.seconds is None:
        return None, None, ("gpu_util", "dur_ms")
    devices = pl.concat([spans["device"], gpu.filter(pl.col("event") == "device_info")["device"]]).drop_nulls().n_unique()
    whole = (span.end_ns or 0) - (span.start_ns or 0) + 1
    # In integer ns (busy_ms holds whole ns): the busy rows come from a group-by, in no fixed order.
    busy_ms = busy_intervals(spans.lazy(), window_ns=whole).select(exact_ms_sum(pl.col("busy_ms"))).collect().item()
    value = busy_ms / (devices * span.seconds * 1000.0)
    return min(1.0, float(value)), "exec_busy_time", ()


def _effective_utilization(
    nominal: float | None, requests: pl.DataFrame, layers: Layers, columns: set[str]
) -> tuple[float | None, tuple[str, ...], str | None]:
    """Nominal utilization times the share of execution time that produced useful work.

    Useful work: spans of inference requests that completed within their SLO, spans of batch
    jobs that completed, and spans of phase `batch_job` with no request. Everything else
    (requests that missed their SLO, timed out, were dropped or retried away, unattributed
    spans) occupied the device without producing served value.
    """
    if "slo_ms" not in columns:
        return None, ("slo_ms",), "requests carry no latency objective, so useful work is undefined"
    if nominal is None:
        return None, ("gpu_util", "dur_ms"), "nominal utilization is not available"
    spans = layers.read("gpu", ("event", "dur_ms", "request_key", "phase"), events=("exec",))
    if spans is None or spans.is_empty():
        return None, ("dur_ms",), "no GPU execution spans to attribute busy time to requests"
    # Useful time per request is its attributed exec time (paths.exec_ms): no span-level join.
    # Durations are summed as integer nanoseconds: exact, so independent of row order.
    useful = pl.when(is_inference()).then(pl.col("slo_met").fill_null(False)).otherwise(pl.col("outcome") == "completed")
    useful_ns = requests.select(_ns(pl.col("exec_ms")).filter(useful).sum()).item() or 0
    totals = spans.select(
        _ns(pl.col("dur_ms")).sum().alias("all"),
        _ns(pl.col("dur_ms")).filter(pl.col("request_key").is_null() & (pl.col("phase") == "batch_job")).sum().alias("batch"),
    ).row(0, named=True)
    share = (useful_ns + (totals["batch"] or 0)) / totals["all"] if totals["all"] else None
    if share is None:
        return None, ("dur_ms",), "execution spans have no duration"
    return float(nominal * share), (), None
