"""What compare concludes: migrations are flagged, equivalent traces are not."""

from __future__ import annotations


def test_migration_split_by_env_reports_migration_risk(migration):
    assert (migration.base.env, migration.candidate.env) == ("onprem", "cloud-a")  # earliest env is the base
    rules = {f.rule: f for f in migration.pair_findings}
    assert "migration-reconfiguration-risk" in rules
    finding = rules["migration-reconfiguration-risk"]
    assert finding.domain == "AI.20"
    assert finding.severity in ("medium", "high", "critical")
    assert finding.evidence["base"].endswith("[env=onprem]")
    assert finding.evidence["env_shift_failure_rate_delta"] <= 0.01  # changed distributions without failures


def test_migration_latency_shift_is_significant_and_slower(migration):
    latency = next(s for s in migration.shifts if s.signal == "latency_ms")
    assert latency.significant and latency.direction == "slower"
    assert latency.matched and latency.token_columns == ("prompt_tokens", "output_tokens")
    assert latency.ks_p < 0.001 and latency.mw_effect > 0.5
    assert latency.wasserstein_ms > 0 and latency.p99_ratio > 1.15


def test_healthy_against_another_seed_shows_no_shift_and_no_ai20(healthy_vs_healthy):
    c = healthy_vs_healthy
    assert all(s.significant is False for s in c.shifts), [(s.signal, s.ks_stat, s.ks_p) for s in c.shifts]
    assert all(s.direction == "none" for s in c.shifts)
    assert not c.pair_findings
    assert not [f for f in c.findings if f.domain == "AI.20"]
    # Quantile moves of signals whose distributions did not shift are not called better or worse.
    for m in c.measures:
        if m.name.split(".")[0] in ("latency_ms", "ttft_ms", "queue_wait_ms"):
            assert m.change in ("unchanged", "within noise", "n/a"), m


def test_a_trace_compared_with_itself_is_unchanged_everywhere():
    from coherence_diag.compare import compare_traces
    from tests.compare.conftest import SAMPLES

    c = compare_traces(SAMPLES / "healthy.parquet", SAMPLES / "healthy.parquet")
    assert {m.change for m in c.measures} <= {"unchanged", "n/a"}
    assert all(s.ks_stat == 0 and s.significant is False for s in c.shifts if s.ks_stat is not None)
    assert all(f.status == "persisting" for f in c.findings)
    assert not c.pair_findings


def test_before_after_pair_resolves_the_before_finding(before_after):
    statuses = {f.rule: f.status for f in before_after.findings}
    assert statuses.get("burst-amplification") == "resolved"
    assert not [f for f in before_after.findings if f.status == "new"]
    latency = next(s for s in before_after.shifts if s.signal == "latency_ms")
    assert latency.significant and latency.direction == "faster"


def test_reversed_migration_is_faster_and_not_a_risk():
    from coherence_diag.compare import compare_envs
    from tests.compare.conftest import SAMPLES

    c = compare_envs(SAMPLES / "migration-reconfiguration-risk.parquet", "cloud-a", "onprem")
    latency = next(s for s in c.shifts if s.signal == "latency_ms")
    assert latency.significant and latency.direction == "faster"
    assert not c.pair_findings  # moving back to the faster environment is not a migration risk
