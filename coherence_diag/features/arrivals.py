"""The arrival process itself: what a trace of arrivals alone can say (public request traces).

A Poisson process has counts whose variance equals their mean at every time scale (index of
dispersion, IDC = 1). Real traffic departs from it in two ways that matter differently to a
fleet:

- **burstiness**: requests cluster within seconds beyond what the local rate explains (on/off
  clients, fan-outs). Queueing delay grows with the arrivals' variability (Kingman: waiting scales
  with (c_a^2 + c_s^2) / 2 at a given load), so a burst costs more than its average rate says.
  Measured as the *local* IDC at the fine scale: the dispersion of per-bin counts around the
  mean count of their own minute, (k / (k - 1)) * sum (c_i - m_block)^2 / sum m_block, which is
  1 for a Poisson process whose rate changes from minute to minute, and the excess share of
  empty bins over the Poisson expectation exp(-m) (on/off traffic leaves bins empty that the
  rate would fill);
- **rate change**: the demand level moves over minutes (diurnal ramps, steps). It needs capacity
  that follows the rate (autoscaling), not burst buffering. Measured as the IDC of minute counts
  relative to what the within-minute dispersion accounts for.

Token load is the work behind the arrivals (prefill ~ prompt tokens): the same local dispersion
of prompt tokens per bin, normalised by the compound-Poisson variance m * E[X^2], is 1 for
Poisson arrivals with independent sizes.

Timestamps quantised to a clock tick (the published Mooncake trace: ~3 s) carry no information
below the tick: bins are whole multiples of the tick, centred on the ticks, and the fine scale is
never finer than the tick.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group

BASE = ("request_id",)
FINE_S = 1.0
BLOCK_S = 60.0
MID_S = 10.0
MIN_BINS = 20  # windows per scale below which a dispersion is not estimated
MIN_MINUTES = 10  # whole minutes below which minute-to-minute dispersion is not estimated
MIN_REQUESTS = 50
QUANTISED_ZERO_GAP_SHARE = 0.5  # more same-instant arrivals than this: timestamps are quantised

FEATURES = [
    FeatureSpec("arrival_requests", "count", "Requests with an arrival time.", BASE),
    FeatureSpec(
        "arrival_clock_tick_ms", "ms",
        "Resolution of the arrival timestamps: the median gap between distinct instants when most arrivals share an "
        f"instant (more than {QUANTISED_ZERO_GAP_SHARE:.0%} zero gaps), else 0 (continuous). Scales below it are not measured.",
        BASE,
    ),
    FeatureSpec(
        "arrival_fine_scale_ms", "ms",
        f"The fine time scale of the arrival dispersion features: {FINE_S:g} s, or the clock tick rounded up when coarser.", BASE,
    ),
    FeatureSpec(
        "arrival_idc_fine", "ratio",
        "Index of dispersion (variance / mean) of arrival counts per fine-scale bin over the whole trace; 1 for Poisson.", BASE,
    ),
    FeatureSpec("arrival_idc_10s", "ratio", "Index of dispersion of arrival counts per 10 s bin; 1 for Poisson.", BASE),
    FeatureSpec("arrival_idc_60s", "ratio", "Index of dispersion of arrival counts per 60 s bin; 1 for Poisson.", BASE),
    FeatureSpec(
        "arrival_local_idc", "ratio",
        "Dispersion of fine-scale arrival counts around the mean of their own minute: (k/(k-1)) sum (c - m_minute)^2 / "
        "sum m_minute. 1 for Poisson arrivals whatever the rate does from minute to minute; above 1 arrivals cluster "
        "within the minute (bursts).",
        BASE,
    ),
    FeatureSpec(
        "arrival_empty_excess_frac", "frac",
        "Share of fine-scale bins without an arrival minus the share a Poisson process at each minute's rate leaves "
        "empty (mean of exp(-m_minute)): on/off traffic leaves bins empty that its rate would fill.",
        BASE,
    ),
    FeatureSpec(
        "arrival_rate_change_ratio", "ratio",
        "IDC of 60 s arrival counts / the within-minute local IDC: how much more the demand level varies from minute to "
        "minute than the clustering within minutes accounts for (about 1 with a steady rate).",
        BASE,
    ),
    FeatureSpec(
        "arrival_peak_minute_ratio", "ratio", "Busiest minute's arrivals / the median minute's.", BASE,
    ),
    FeatureSpec(
        "prompt_load_local_dispersion", "ratio",
        "Dispersion of the prompt tokens arriving per fine-scale bin around their minute's mean, normalised by the "
        "compound-Poisson variance m_minute * E[prompt^2]: 1 for Poisson arrivals with independent sizes; above 1 the "
        "prefill work arrives in bursts (clustered arrivals or clustered large prompts).",
        ("request_id", "prompt_tokens"),
    ),
]


@feature_group("arrival_process", FEATURES)
def arrival_process(ctx: FeatureContext) -> GroupResult:
    names = [f.name for f in FEATURES]
    result = GroupResult({n: None for n in names})
    arrivals = ctx.requests.select("arrive_ns", "prompt_tokens").filter(pl.col("arrive_ns").is_not_null()).sort("arrive_ns")
    n = arrivals.height
    result.values["arrival_requests"] = float(n)
    if n < MIN_REQUESTS:
        return result.explain(f"fewer than {MIN_REQUESTS} arrivals")
    t = arrivals["arrive_ns"].to_numpy().astype(np.int64)
    tick = _clock_tick_ns(t)
    result.values["arrival_clock_tick_ms"] = tick / 1e6
    fine = _scale_ns(FINE_S, tick)
    block = _scale_ns(BLOCK_S, tick)
    result.values["arrival_fine_scale_ms"] = fine / 1e6
    origin = int(t[0]) - tick // 2  # bins centred on the clock's ticks
    span = int(t[-1]) - origin

    for name, scale, least in (
        ("arrival_idc_fine", fine, MIN_BINS), ("arrival_idc_10s", _scale_ns(MID_S, tick), MIN_BINS), ("arrival_idc_60s", block, MIN_MINUTES),
    ):
        counts = _counts(t, origin, scale, span, least)
        result.values[name] = _idc(counts, least)
        if counts is None:
            result.reasons[name] = f"the trace spans fewer than {least} bins of {scale / 1e9:g} s"

    per_block = block // fine
    counts = _counts(t, origin, fine, (span // block) * block, MIN_BINS)
    if counts is None or per_block < 2 or len(counts) < per_block * 3:
        return result.explain(f"the trace spans fewer than 3 minutes of {fine / 1e9:g} s bins")
    grid = counts.reshape(-1, per_block).astype(np.float64)
    local = _local_dispersion(grid, grid)
    result.values["arrival_local_idc"] = local
    means = np.repeat(grid.mean(axis=1), per_block)
    result.values["arrival_empty_excess_frac"] = float((grid.ravel() == 0).mean() - np.exp(-means).mean())
    minutes = grid.sum(axis=1)
    idc_blocks = _idc(minutes.astype(np.int64), MIN_MINUTES)
    if idc_blocks is not None and local:
        result.values["arrival_rate_change_ratio"] = idc_blocks / local
    else:
        result.reasons["arrival_rate_change_ratio"] = f"fewer than {MIN_MINUTES} whole minutes"
    median_minute = float(np.median(minutes))
    if median_minute > 0:
        result.values["arrival_peak_minute_ratio"] = float(minutes.max()) / median_minute
    else:
        result.reasons["arrival_peak_minute_ratio"] = "the median minute has no arrival"

    tokens = arrivals["prompt_tokens"].to_numpy()
    if "prompt_tokens" in ctx.columns and arrivals["prompt_tokens"].null_count() < n:
        sizes = np.nan_to_num(tokens.astype(np.float64), nan=0.0)
        load = _sums(t, sizes, origin, fine, (span // block) * block).reshape(-1, per_block)
        second_moment = float(np.mean(sizes**2))
        result.values["prompt_load_local_dispersion"] = _local_dispersion(load, grid, second_moment)
    return result.explain("undefined for this arrival process")


def _clock_tick_ns(t: np.ndarray) -> int:
    gaps = np.diff(t)
    if len(gaps) == 0 or float((gaps == 0).mean()) <= QUANTISED_ZERO_GAP_SHARE:
        return 0
    positive = gaps[gaps > 0]
    return int(np.median(positive)) if len(positive) else 0


def _scale_ns(seconds: float, tick: int) -> int:
    scale = int(seconds * 1e9)
    return scale if tick <= 0 else max(1, -(-scale // tick)) * tick


def _counts(t: np.ndarray, origin: int, scale: int, span: int, least: int) -> np.ndarray | None:
    bins = int(span // scale)
    if bins < least:
        return None
    index = (t - origin) // scale
    return np.bincount(index[index < bins], minlength=bins)


def _sums(t: np.ndarray, weights: np.ndarray, origin: int, scale: int, span: int) -> np.ndarray:
    bins = int(span // scale)
    index = (t - origin) // scale
    keep = index < bins
    return np.bincount(index[keep], weights=weights[keep], minlength=bins)


def _idc(counts: np.ndarray | None, least: int) -> float | None:
    if counts is None or len(counts) < least:
        return None
    mean = float(counts.mean())
    return float(counts.var(ddof=1)) / mean if mean > 0 else None


def _local_dispersion(values: np.ndarray, counts: np.ndarray, second_moment: float = 1.0) -> float | None:
    """(k/(k-1)) sum (x - block mean)^2 / sum(block mean count * second_moment): x per fine bin
    (rows = minutes). With counts as values and second_moment 1, the local IDC."""
    k = values.shape[1]
    deviation = ((values - values.mean(axis=1, keepdims=True)) ** 2).sum() * k / (k - 1)
    expected = float(counts.sum()) * second_moment
    return float(deviation / expected) if expected > 0 else None
