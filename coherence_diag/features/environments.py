"""Environment-shift features: one trace that spans two environments (a migration).

The two sides are found from the data:

- `env` values on the requests: when completed inference requests carry two or more `env`
  values (each with enough requests), the *base* is the environment whose requests arrived
  earliest (median arrival) and the *candidate* the one whose requests arrived latest;
- otherwise hypervisor `migrate` events: requests arriving before the first migration are the
  base, those arriving after the last are the candidate.

When `migrate` events exist, requests arriving while hosts were being moved (between the first and
the last `migrate`) are left out: they ran on a mixture of both environments.

The comparison itself (workload matching by token bands, KS / Mann-Whitney tests, effect sizes)
is `shift.distribution_shift`; a trace with a single environment has no shift to measure and its
features are None.
"""

from __future__ import annotations

import polars as pl

from coherence_diag.features.registry import FeatureContext, FeatureSpec, GroupResult, feature_group
from coherence_diag.features.shift import MIN_SIDE, distribution_shift

NEEDS = ("env",)

# feature name -> (key in distribution_shift's result, unit, description)
_OUTPUTS = {
    "env_shift_ks_stat": ("ks_stat", "ratio", "Two-sample Kolmogorov-Smirnov statistic between the workload-matched end-to-end latency distributions of the base and candidate environments (0 = identical)."),
    "env_shift_ks_p": ("ks_p", "p", "p-value of the two-sample KS test (scipy.stats.ks_2samp) on the workload-matched latencies of the two environments."),
    "env_shift_mw_p": ("mw_p", "p", "Two-sided Mann-Whitney U p-value on the workload-matched latencies of the two environments."),
    "env_shift_mw_effect": ("mw_effect", "frac", "Probability that a matched candidate-environment request is slower than a matched base request (Mann-Whitney U / n1 n2; 0.5 = no shift)."),
    "env_shift_wasserstein_rel": ("wasserstein_rel", "ratio", "Wasserstein-1 distance between the matched latency distributions of the two environments, relative to the base median latency."),
    "env_shift_p50_ratio": ("p50_ratio", "ratio", "Median latency of the candidate environment / base environment, workload-matched."),
    "env_shift_p99_ratio": ("p99_ratio", "ratio", "p99 latency of the candidate environment / base environment, workload-matched by token bands."),
    "env_shift_raw_p99_ratio": ("raw_p99_ratio", "ratio", "p99 latency of the candidate / base environment before workload matching."),
    "env_shift_tail_ratio_change": ("tail_ratio_change", "ratio", "Tail ratio (p99 / p50) of the candidate environment / that of the base environment, workload-matched (> 1: a heavier tail)."),
    "env_shift_slo_violation_delta": ("slo_violation_delta", "frac", "Share of matched requests over their slo_ms in the candidate environment minus that in the base environment."),
    "env_shift_slo_elasticity": ("slo_elasticity", "ratio", "SLO-violation elasticity: relative change of the violation rate / relative change of the median latency between the environments (None when the base has no violations or the median moved < 1 %)."),
    "env_shift_failure_rate_delta": ("failure_rate_delta", "frac", "(timeouts + drops) / finished inference requests in the candidate environment minus the same in the base environment (unmatched)."),
    "env_shift_mix_distance": ("mix_distance", "frac", "Total-variation distance between the token-band compositions of the two environments' requests before matching (0 = same request mix)."),
    "env_shift_matched_requests": ("n_matched", "count", "Completed inference requests per environment in the workload-matched comparison."),
}


SHIFT_GROUP = "environment_shift"


@feature_group(
    SHIFT_GROUP,
    [FeatureSpec(name, unit, desc, NEEDS) for name, (_key, unit, desc) in _OUTPUTS.items()],
)
def environment_shift(ctx: FeatureContext) -> GroupResult:
    split = environment_split(ctx)
    if split is None:
        why = "not applicable: the trace holds one environment and no migration (nothing to compare)"
        return GroupResult({}, reasons={name: why for name in _OUTPUTS})
    base, candidate, facts = split
    result = distribution_shift(base, candidate)
    values, evidence = shift_features(result)
    out = GroupResult(values, {"env_shift_p99_ratio": {**facts, **evidence}})
    if (values["env_shift_matched_requests"] or 0) < MIN_SIDE:  # type: ignore[operator]
        return out.explain(f"fewer than {MIN_SIDE} workload-matched completed requests per environment")
    return out.explain("an environment has no finished inference requests", ["env_shift_failure_rate_delta"]).explain(
        "the matched requests carry no slo_ms", ["env_shift_slo_violation_delta"]
    ).explain(
        "the base environment has no SLO violations, or the median latency moved less than 1 %",
        ["env_shift_slo_elasticity"],
    )


def shift_features(result: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """The env_shift_* feature values and their evidence from a `distribution_shift` result.

    Shared with `compare`, where the two sides are two traces (or two environments) instead of
    the two environments found inside one trace; the same rules then read the same names.
    """
    values = {name: result.get(key) for name, (key, _u, _d) in _OUTPUTS.items()}
    evidence = {
        "base_p50_ms": result.get("p50_base"),
        "candidate_p50_ms": result.get("p50_candidate"),
        "base_p99_ms": result.get("p99_base"),
        "candidate_p99_ms": result.get("p99_candidate"),
        "base_failure_rate": result.get("failure_rate_base"),
        "candidate_failure_rate": result.get("failure_rate_candidate"),
        "workload_matched_on": result.get("token_columns"),
    }
    return values, evidence


def _migration_window(ctx: FeatureContext) -> tuple[int, int] | None:
    hyp = ctx.layer("hypervisor", ("ts", "event"), events=("migrate",))
    if hyp is None:
        return None
    row = hyp.filter(pl.col("event") == "migrate").select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).row(0)
    return None if row[0] is None else (int(row[0]), int(row[1]))


def environment_split(ctx: FeatureContext) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, object]] | None:
    """(base requests, candidate requests, facts) or None when the trace holds one environment."""
    in_scope = pl.col("arrive_ns").is_not_null()
    window = _migration_window(ctx)
    if window is not None:
        in_scope = in_scope & ((pl.col("arrive_ns") < window[0]) | (pl.col("arrive_ns") > window[1]))
    # The environments, from a narrow lazy query: a single-environment trace (the common case)
    # never gathers the wide request frame.
    envs = (
        ctx.inference.lazy()
        .filter(in_scope & pl.col("env").is_not_null() & (pl.col("outcome") == "completed"))
        .group_by("env")
        .agg(pl.len().alias("n"), pl.col("arrive_ns").median().alias("at"))
        .filter(pl.col("n") >= MIN_SIDE)
        .with_columns(pl.col("env").cast(pl.String))
        .sort("at", "env")
        .collect()
    )
    if envs.height < 2 and window is None:
        return None
    requests = ctx.inference.filter(in_scope)
    if envs.height >= 2:
        base_env, cand_env = envs["env"][0], envs["env"][-1]
        env = pl.col("env")
        facts: dict[str, object] = {
            "split": "env",
            "base_env": base_env,
            "candidate_env": cand_env,
            "environments": envs.height,
        }
        return requests.filter(env == base_env), requests.filter(env == cand_env), facts
    if window is not None:
        hyp = ctx.layer("hypervisor", ("event", "env"), events=("migrate",))
        target = hyp.filter(pl.col("event") == "migrate")["env"].drop_nulls().cast(pl.String)
        facts = {
            "split": "migrate events",
            "base_env": envs["env"][0] if envs.height else None,
            "candidate_env": target.min() if target.len() else None,
        }
        base = requests.filter(pl.col("arrive_ns") < window[0])
        candidate = requests.filter(pl.col("arrive_ns") > window[1])
        if base.height and candidate.height:
            return base, candidate, facts
    return None
