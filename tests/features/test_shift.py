"""shift.distribution_shift: workload matching and the shift statistics on known samples."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coherence_diag.features.shift import distribution_shift, match_by_tokens


def _requests(n: int, seed: int, *, long_share: float, slow: float = 1.0, failures: int = 0) -> pl.DataFrame:
    """Two kinds of work: short (prompt 200, output 20 tokens, ~1 s) and long (prompt 4000, output
    800 tokens, ~20 s). Latency depends only on the kind of work (and `slow`)."""
    rng = np.random.default_rng(seed)
    long = rng.random(n) < long_share
    prompt = np.where(long, 4000, 200) + rng.integers(0, 50, n)
    output = np.where(long, 800, 20) + rng.integers(0, 10, n)
    latency = np.where(long, 20_000.0, 1_000.0) * np.exp(0.2 * rng.standard_normal(n)) * slow
    outcome = np.array(["completed"] * n, dtype=object)
    outcome[:failures] = "timeout"
    return pl.DataFrame(
        {
            "workload_class": ["inference"] * n,
            "prompt_tokens": prompt,
            "output_tokens": output,
            "latency_ms": np.where(outcome == "completed", latency, np.nan),
            "outcome": outcome.tolist(),
            "slo_ms": [25_000.0] * n,
        }
    ).with_columns(pl.col("latency_ms").fill_nan(None))


def test_a_different_request_mix_is_not_a_slower_environment():
    base = _requests(3000, 1, long_share=0.1)
    candidate = _requests(3000, 2, long_share=0.4)  # same speed, four times as many long requests
    out = distribution_shift(base, candidate)
    assert out["raw_p99_ratio"] is not None
    assert out["mix_distance"] > 0.25  # the composition differs ...
    assert out["p99_ratio"] == pytest.approx(1.0, abs=0.1)  # ... but matched work is as fast
    assert out["p50_ratio"] == pytest.approx(1.0, abs=0.1)
    assert out["ks_p"] > 0.001 and out["ks_stat"] < 0.08


def test_a_slower_environment_shows_as_a_shift():
    base = _requests(3000, 1, long_share=0.2)
    candidate = _requests(3000, 2, long_share=0.2, slow=1.5)
    out = distribution_shift(base, candidate)
    assert out["matched"] is True and out["token_columns"] == ["prompt_tokens", "output_tokens"]
    assert out["p99_ratio"] == pytest.approx(1.5, rel=0.1)
    assert out["p50_ratio"] == pytest.approx(1.5, rel=0.1)
    assert out["ks_p"] < 1e-6 and out["mw_p"] < 1e-6
    assert out["mw_effect"] > 0.7  # a candidate request is usually slower than a base request
    assert out["wasserstein_rel"] > 0.3
    assert out["tail_ratio_change"] == pytest.approx(1.0, abs=0.15)
    assert out["failure_rate_delta"] == 0.0


def test_failure_rates_and_too_little_data():
    base = _requests(40, 1, long_share=0.2)
    candidate = _requests(40, 2, long_share=0.2, failures=4)
    out = distribution_shift(base, candidate)
    assert out["failure_rate_base"] == 0.0
    assert out["failure_rate_candidate"] == pytest.approx(0.1)
    assert out["ks_p"] is None and out["p99_ratio"] is None  # fewer than 50 matched requests per side


def test_matching_without_token_columns_compares_raw_distributions():
    base = _requests(500, 1, long_share=0.2).drop("prompt_tokens", "output_tokens")
    candidate = _requests(500, 2, long_share=0.2).drop("prompt_tokens", "output_tokens")
    mb, mc, info = match_by_tokens(base, candidate)
    assert info["matched"] is False and info["cells"] == 1
    assert mb.height == mc.height == 500


def test_thinning_keeps_composition_and_caps_size():
    base = _requests(4000, 1, long_share=0.3)
    candidate = _requests(2000, 2, long_share=0.3)
    mb, mc, info = match_by_tokens(base, candidate, max_per_side=500)
    assert abs(mb.height - mc.height) <= info["cells"]
    assert 450 <= mb.height <= 550
    share = lambda f: float((f["output_tokens"] > 400).mean())  # noqa: E731
    assert share(mb) == pytest.approx(share(mc), abs=0.02)


def test_anderson_darling_and_absolute_wasserstein_accompany_ks():
    base = _requests(3000, 1, long_share=0.2)
    same = distribution_shift(base, _requests(3000, 2, long_share=0.2))
    slower = distribution_shift(base, _requests(3000, 2, long_share=0.2, slow=1.5))
    assert 0.001 <= slower["ad_p"] <= same["ad_p"] <= 0.25  # scipy's clip range
    assert slower["ad_stat"] > same["ad_stat"]
    assert slower["wasserstein_ms"] == pytest.approx(slower["wasserstein_rel"] * slower["p50_base"])


def test_violations_are_counted_against_the_named_objective():
    base = _requests(3000, 1, long_share=0.2).with_columns(ttft_ms=pl.col("latency_ms") / 10, ttft_slo_ms=pl.lit(500.0))
    candidate = _requests(3000, 2, long_share=0.2, slow=1.5).with_columns(
        ttft_ms=pl.col("latency_ms") / 10, ttft_slo_ms=pl.lit(500.0)
    )
    ttft = distribution_shift(base, candidate, value="ttft_ms", slo="ttft_slo_ms")
    share = lambda f: float((f["ttft_ms"] > 500.0).mean())  # noqa: E731
    assert ttft["slo_violation_base"] == pytest.approx(share(base), abs=0.03)
    assert ttft["slo_violation_candidate"] == pytest.approx(share(candidate), abs=0.03)
    assert distribution_shift(base, candidate, value="ttft_ms", slo=None)["slo_violation_base"] is None
