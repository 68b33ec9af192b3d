"""Distribution-shift statistics between two sets of request paths (two environments, two traces).

The one entry point is `distribution_shift(base, candidate)`: it takes two request-path frames
(the `requests` table of docs/paths.md, or any frame with its columns), matches them by workload
(prompt-token and output-token bands, so that a different request mix is not mistaken for a
slower environment) and compares their end-to-end latency distributions with rank tests and
effect sizes. It is used for the two environments of one trace (`environments.py`) and is meant
for comparing two traces (a `compare BASE CANDIDATE` command).

Nothing here registers features: this module is plain functions over Polars frames and numpy.

Workload matching. Completed inference requests of both sides are put into cells: quantile bands
of `prompt_tokens` (pooled over both sides) crossed with quantile bands of `output_tokens` when
that column is present. Within each cell the side with more requests is thinned to the other's
count by taking evenly spaced order statistics of its latency (the quantile function at
(i + 0.5) / k), which keeps the cell's latency distribution and makes the two matched samples have
the same workload composition. Cells with fewer than `min_cell` requests on either side are left
out. Without token columns the comparison is unmatched (`matched` is False).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from coherence_diag.paths import is_inference

QUANTILE_P99 = 0.99
MIN_SIDE = 50  # completed requests per side (after matching) below which nothing is compared
MIN_CELL = 5
MAX_PER_SIDE = 100_000  # matched requests per side; more only sharpens p-values that are already ~0


def _inference(frame: pl.DataFrame) -> pl.DataFrame:
    if "workload_class" not in frame.columns:
        return frame
    return frame.filter(is_inference())


def _band_edges(values: np.ndarray, n_bands: int) -> np.ndarray:
    """Inner edges of `n_bands` pooled quantile bands (duplicates removed)."""
    if n_bands <= 1 or values.size == 0:
        return np.empty(0)
    qs = np.quantile(values, np.arange(1, n_bands) / n_bands)
    return np.unique(qs)


def _bands_per_dim(n_small: int, dims: int, min_cell_target: int = 40) -> int:
    """As many bands per token dimension as keep ~min_cell_target requests per cell (1..4)."""
    if dims == 0:
        return 1
    per_dim = int((max(n_small, 1) / min_cell_target) ** (1.0 / dims))
    return max(1, min(4, per_dim))


def _cells(base: pl.DataFrame, cand: pl.DataFrame, token_cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cell id of every row of both sides (pooled quantile bands over each token column)."""
    n_bands = _bands_per_dim(min(base.height, cand.height), len(token_cols))
    cb = np.zeros(base.height, dtype=np.int64)
    cc = np.zeros(cand.height, dtype=np.int64)
    for col in token_cols:
        vb = base[col].to_numpy().astype(np.float64)
        vc = cand[col].to_numpy().astype(np.float64)
        edges = _band_edges(np.concatenate([vb, vc]), n_bands)
        cb = cb * (len(edges) + 1) + np.searchsorted(edges, vb, side="right")
        cc = cc * (len(edges) + 1) + np.searchsorted(edges, vc, side="right")
    return cb, cc


def _thin(order: np.ndarray, k: int) -> np.ndarray:
    """k evenly spaced order statistics of the (latency-sorted) row indices `order`."""
    n = order.size
    if k >= n:
        return order
    return order[((np.arange(k) + 0.5) * n / k).astype(np.int64)]


def match_by_tokens(
    base: pl.DataFrame,
    candidate: pl.DataFrame,
    *,
    value: str = "latency_ms",
    min_cell: int = MIN_CELL,
    max_per_side: int = MAX_PER_SIDE,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Workload-matched subsets of two frames of completed requests (see the module docstring).

    Above `max_per_side` matched requests every cell is thinned by the same factor (evenly spaced
    order statistics again), which keeps both the composition and each cell's distribution.

    Rows need `value`; `prompt_tokens` / `output_tokens` are used when present with values.
    Returns the matched base rows, matched candidate rows, and facts about the matching:
    `matched` (token bands used), `token_columns`, `cells`, `mix_distance` (total-variation
    distance between the two sides' cell compositions before matching, 0 = same mix).
    """
    token_cols = [
        c
        for c in ("prompt_tokens", "output_tokens")
        if c in base.columns and c in candidate.columns and base[c].null_count() < base.height and candidate[c].null_count() < candidate.height
    ]
    if token_cols:
        base = base.filter(*[pl.col(c).is_not_null() for c in token_cols])
        candidate = candidate.filter(*[pl.col(c).is_not_null() for c in token_cols])
    info: dict[str, Any] = {"matched": bool(token_cols), "token_columns": token_cols, "cells": 1, "mix_distance": 0.0}
    if base.is_empty() or candidate.is_empty():
        return base.head(0), candidate.head(0), info
    cb, cc = _cells(base, candidate, token_cols)
    ids = np.union1d(cb, cc)
    nb = np.array([(cb == i).sum() for i in ids], dtype=np.float64)
    nc = np.array([(cc == i).sum() for i in ids], dtype=np.float64)
    info["mix_distance"] = float(0.5 * np.abs(nb / nb.sum() - nc / nc.sum()).sum())
    vb = base[value].to_numpy()
    vc = candidate[value].to_numpy()
    keep_b: list[np.ndarray] = []
    keep_c: list[np.ndarray] = []
    used = 0
    common = np.minimum(nb, nc)
    common_total = common[common >= min_cell].sum()
    scale = min(1.0, max_per_side / common_total) if common_total else 1.0
    for i, n_common in zip(ids, common):
        if n_common < min_cell:
            continue
        k = max(1, int(round(n_common * scale)))
        used += 1
        rows_b = np.flatnonzero(cb == i)
        rows_c = np.flatnonzero(cc == i)
        keep_b.append(_thin(rows_b[np.argsort(vb[rows_b], kind="stable")], k))
        keep_c.append(_thin(rows_c[np.argsort(vc[rows_c], kind="stable")], k))
    info["cells"] = used
    if not used:
        return base.head(0), candidate.head(0), info
    return base[np.sort(np.concatenate(keep_b))], candidate[np.sort(np.concatenate(keep_c))], info


def _failure_rate(frame: pl.DataFrame) -> float | None:
    if "outcome" not in frame.columns:
        return None
    finished = frame.filter(pl.col("outcome") != "unfinished")
    if finished.is_empty():
        return None
    return float(finished["outcome"].is_in(["timeout", "dropped"]).mean())


def _violation_rate(frame: pl.DataFrame, value: str, slo: str | None) -> float | None:
    if slo is None or slo not in frame.columns:
        return None
    with_slo = frame.filter(pl.col(slo).is_not_null())
    if with_slo.is_empty():
        return None
    return float((with_slo[value] > with_slo[slo]).mean())


def _anderson_darling(b: np.ndarray, c: np.ndarray) -> tuple[float | None, float | None]:
    """k-sample Anderson-Darling statistic and p-value (scipy clips the p-value to [0.001, 0.25])."""
    if np.unique(np.concatenate([b, c])).size < 2:
        return None, None  # every value identical: the test is undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when it clips the p-value; the clip is documented
        res = stats.anderson_ksamp([b, c])
    return float(res.statistic), float(res.pvalue)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b > 0:
        return None
    return a / b


def distribution_shift(
    base: pl.DataFrame,
    candidate: pl.DataFrame,
    *,
    value: str = "latency_ms",
    slo: str | None = "slo_ms",
    min_side: int = MIN_SIDE,
) -> dict[str, Any]:
    """Compare the distribution of `value` (default end-to-end latency) of `candidate` with that
    of `base`, workload-matched. `slo` names the per-request objective `value` is held to
    (`slo_ms` for latency, `ttft_slo_ms` for TTFT, None when there is none).

    `base` and `candidate` are request-path frames (docs/paths.md). Inference requests are used
    (batch jobs dropped when `workload_class` is present); latency statistics use completed
    requests with a `value`; failure rates use all finished requests (`outcome`).

    Returns a dict (every number a float or None; None when a side has fewer than `min_side`
    matched requests or the input lacks the column):

    - `n_base`, `n_candidate`: completed requests per side; `n_matched`: matched requests per side
    - `matched`, `token_columns`, `cells`, `mix_distance`: the workload matching (match_by_tokens)
    - `ks_stat`, `ks_p`: two-sample Kolmogorov-Smirnov statistic and p-value (scipy.stats.ks_2samp)
    - `ad_stat`, `ad_p`: k-sample Anderson-Darling statistic and p-value (scipy.stats.anderson_ksamp;
      the p-value is clipped by scipy to [0.001, 0.25]), more sensitive to the tails than KS
    - `mw_p`: two-sided Mann-Whitney U p-value; `mw_effect`: P(candidate > base) + 0.5 P(tie)
    - `wasserstein_ms`: Wasserstein-1 distance between the matched samples (unit of `value`);
      `wasserstein_rel`: the same / base median
    - `p50_base`, `p50_candidate`, `p99_base`, `p99_candidate` (ms) and `p50_ratio`, `p99_ratio`
    - `tail_ratio_base`, `tail_ratio_candidate` (p99/p50) and `tail_ratio_change` (candidate/base)
    - `raw_p99_ratio`: p99 ratio before matching (differs from p99_ratio when the mix differs)
    - `slo_violation_base`, `slo_violation_candidate`: share of matched requests over `slo`
    - `slo_violation_delta`: candidate - base; `slo_elasticity`: relative change of the violation
      rate / relative change of the median latency (None when either change is undefined or the
      median moved by less than 1 %)
    - `failure_rate_base`, `failure_rate_candidate`, `failure_rate_delta`: (timeouts + drops) /
      finished requests on each side, unmatched
    """
    base_inf, cand_inf = _inference(base), _inference(candidate)
    out: dict[str, Any] = {
        "failure_rate_base": _failure_rate(base_inf),
        "failure_rate_candidate": _failure_rate(cand_inf),
    }
    fb, fc = out["failure_rate_base"], out["failure_rate_candidate"]
    out["failure_rate_delta"] = fc - fb if fb is not None and fc is not None else None

    def completed(frame: pl.DataFrame) -> pl.DataFrame:
        if value not in frame.columns:
            return frame.head(0)
        keep = pl.col(value).is_not_null() & pl.col(value).is_finite()
        if "outcome" in frame.columns:
            keep = keep & (pl.col("outcome") == "completed")
        return frame.filter(keep)

    done_b, done_c = completed(base_inf), completed(cand_inf)
    out["n_base"], out["n_candidate"] = float(done_b.height), float(done_c.height)
    mb, mc, info = match_by_tokens(done_b, done_c, value=value)
    out.update(info)
    out["n_matched"] = float(min(mb.height, mc.height))
    stat_keys = (
        "ks_stat", "ks_p", "ad_stat", "ad_p", "mw_p", "wasserstein_ms", "mw_effect", "wasserstein_rel", "p50_base", "p50_candidate", "p99_base",
        "p99_candidate", "p50_ratio", "p99_ratio", "tail_ratio_base", "tail_ratio_candidate", "tail_ratio_change",
        "raw_p99_ratio", "slo_violation_base", "slo_violation_candidate", "slo_violation_delta", "slo_elasticity",
    )
    out.update({k: None for k in stat_keys})
    if mb.height < min_side or mc.height < min_side:
        return out

    b = mb[value].to_numpy().astype(np.float64)
    c = mc[value].to_numpy().astype(np.float64)
    ks = stats.ks_2samp(b, c)
    ad_stat, ad_p = _anderson_darling(b, c)
    wasserstein = float(stats.wasserstein_distance(b, c))
    mw = stats.mannwhitneyu(c, b, alternative="two-sided")
    p50b, p99b = (float(x) for x in np.quantile(b, [0.5, QUANTILE_P99]))
    p50c, p99c = (float(x) for x in np.quantile(c, [0.5, QUANTILE_P99]))
    raw_b = float(np.quantile(done_b[value].to_numpy(), QUANTILE_P99))
    raw_c = float(np.quantile(done_c[value].to_numpy(), QUANTILE_P99))
    out.update(
        ks_stat=float(ks.statistic),
        ks_p=float(ks.pvalue),
        ad_stat=ad_stat,
        ad_p=ad_p,
        mw_p=float(mw.pvalue),
        wasserstein_ms=wasserstein,
        mw_effect=float(mw.statistic) / (b.size * c.size),
        wasserstein_rel=_ratio(wasserstein, p50b),
        p50_base=p50b,
        p50_candidate=p50c,
        p99_base=p99b,
        p99_candidate=p99c,
        p50_ratio=_ratio(p50c, p50b),
        p99_ratio=_ratio(p99c, p99b),
        tail_ratio_base=_ratio(p99b, p50b),
        tail_ratio_candidate=_ratio(p99c, p50c),
        raw_p99_ratio=_ratio(raw_c, raw_b),
    )
    out["tail_ratio_change"] = _ratio(out["tail_ratio_candidate"], out["tail_ratio_base"])
    vb, vc = _violation_rate(mb, value, slo), _violation_rate(mc, value, slo)
    out["slo_violation_base"], out["slo_violation_candidate"] = vb, vc
    if vb is not None and vc is not None:
        out["slo_violation_delta"] = vc - vb
        median_change = out["p50_ratio"] - 1.0 if out["p50_ratio"] is not None else None
        if vb > 0 and median_change is not None and abs(median_change) >= 0.01:
            out["slo_elasticity"] = ((vc - vb) / vb) / median_change
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
