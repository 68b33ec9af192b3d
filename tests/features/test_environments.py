"""Environment split and shift features on a hand-built two-environment trace."""

from __future__ import annotations

import numpy as np
import pytest

from coherence_diag import features
from tests.features._build import MS, T0, compute, context, sched

NAMES = ("env_shift_p99_ratio", "env_shift_p50_ratio", "env_shift_ks_p", "env_shift_failure_rate_delta",
         "env_shift_matched_requests")


def _rows(*, env_on_requests: bool, migrate: bool, slow: float = 1.5) -> list[dict]:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(600):
        t = i * 500.0  # 300 s; environment changes at 150 s
        after = t >= 150_000
        lat = 1_000.0 * float(np.exp(0.3 * rng.standard_normal())) * (slow if after else 1.0)
        env = ("cloud" if after else "onprem") if env_on_requests else None
        rid = f"r{i}"
        rows += [
            sched(rid, "arrive", t, env=env, priority=1, workload_class="inference", slo_ms=5_000.0,
                  prompt_tokens=int(rng.integers(100, 2000))),
            sched(rid, "dispatch", t, env=env, device="g0", pool="p", predicted_ms=lat),
            sched(rid, "complete", t + lat, env=env, output_tokens=int(rng.integers(10, 200))),
        ]
    if migrate:  # hosts move between 145 s and 150 s; requests arriving then ran in both worlds
        rows += [{"ts": T0 + int((145_000 + 1_000 * k) * MS), "layer": "hypervisor", "event": "migrate",
                  "host": f"h{k}", "env": "cloud"} for k in range(6)]
    return rows


@pytest.mark.parametrize("env_on_requests, migrate", [(True, False), (True, True), (False, True)])
def test_latency_shift_between_environments(tmp_path, env_on_requests, migrate):
    ctx = context(tmp_path, _rows(env_on_requests=env_on_requests, migrate=migrate))
    result = features.compute(ctx, set(NAMES))
    v = result.values
    assert v["env_shift_p50_ratio"] == pytest.approx(1.5, rel=0.1)
    assert v["env_shift_ks_p"] < 1e-6
    assert v["env_shift_failure_rate_delta"] == 0.0
    facts = result.details["env_shift_p99_ratio"]
    assert facts["split"] == ("env" if env_on_requests else "migrate events")
    if env_on_requests:
        assert (facts["base_env"], facts["candidate_env"]) == ("onprem", "cloud")
    if migrate:  # 10 requests arrive inside the migration window and are left out
        assert v["env_shift_matched_requests"] <= 290


def test_one_environment_has_no_shift(tmp_path):
    rows = _rows(env_on_requests=True, migrate=False, slow=1.0)
    for r in rows:
        r["env"] = "onprem"
    v = compute(context(tmp_path, rows), *NAMES)
    assert all(v[n] is None for n in NAMES)
