"""Compile `SimParams` into a concrete, fully random-drawn simulation `Plan`.

Every random draw of the plan happens here (and in the injections' hooks it calls), from named
sub-streams of one seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coherence_diag.simulate.arrivals import ArrivalTable, ReplayedArrivals, load_arrivals
from coherence_diag.simulate.fleet import build_fleet
from coherence_diag.simulate.hardware import ACCELERATORS, decode_step_ms, prefill_ms
from coherence_diag.simulate.plan import MAX_ATTEMPTS, Plan, cotenant_series, rng_for
from coherence_diag.simulate.spec import SimParams
from coherence_diag.simulate.workload import (
    JobBatch,
    RateProfile,
    RequestBatch,
    batch_jobs,
    sample_priorities,
    sample_tokens,
    slo_targets,
    synthetic_requests,
)


def build_plan(
    params: SimParams, seed: int, scale: float, duration_s: float | None, arrivals: Path | ArrivalTable | None
) -> Plan:
    replay: ReplayedArrivals | None = None
    if arrivals is not None:
        replay = load_arrivals(arrivals, speedup=scale, duration_s=duration_s)
        duration = replay.duration_s
        role_mult = _replay_fleet_mult(params, replay)
    else:
        duration = float(duration_s) if duration_s is not None else params.workload.duration_s
        if scale < 1.0:
            # The smallest pools hold one device and cannot shrink without changing the
            # physics, so a scale below 1 keeps the fleet and load and shortens the trace.
            duration *= scale
            scale = 1.0
        role_mult = {"prefill": scale, "decode": scale, "unified": scale, "batch": scale}

    additions = [g for inj in params.injections for g in inj.devices(duration)]
    nic = params.network.nic_gbs * 1e9 * params.network.nic_eff
    fleet = build_fleet(params.pools, role_mult, additions, nic)

    parts: list[RequestBatch] = []
    if replay is None:
        profile = RateProfile.flat(duration)
        for i, inj in enumerate(params.injections):
            inj.shape_rate(profile, rng_for(seed, f"rate:{i}:{type(inj).__name__}"))
        parts.append(synthetic_requests(rng_for(seed, "workload"), params.workload, params.workload.rate_rps * scale, profile))
    else:
        rng = rng_for(seed, "workload")
        n = len(replay.arrival_s)
        prompt, output = replay.prompt, replay.output
        if prompt is None or output is None:  # a source without token counts: the scenario's own mix
            wl = params.workload
            drawn = sample_tokens(rng_for(seed, "replay-tokens"), wl.mix, n, wl.max_prompt_tokens, wl.max_output_tokens)
            prompt = drawn[0] if prompt is None else prompt
            output = drawn[1] if output is None else output
        parts.append(RequestBatch(replay.arrival_s, prompt, output, sample_priorities(rng, params.workload.priority_probs, n)))
    for i, inj in enumerate(params.injections):
        extra = inj.extra_requests(fleet, duration, rng_for(seed, f"extra:{i}:{type(inj).__name__}"))
        if extra is not None:
            parts.append(extra)
    req = RequestBatch.concat(parts)
    n = len(req.arrival_s)
    slo_ms, ttft_slo_ms, timeout_s = slo_targets(params.workload, req.prompt, req.output)

    draw = rng_for(seed, "service-noise")
    horizon = int(max(duration * 2.0, duration + 600.0)) + 60
    n_dev, n_link, n_host = fleet.n_devices, len(fleet.link_name), len(fleet.host_name)

    job_pool = -1
    jobs = JobBatch(np.zeros(0), np.zeros(0))
    if params.batch_jobs is not None:
        job_pool = fleet.pool_index(params.batch_jobs.pool)
        job_mult = role_mult.get(fleet.pools[job_pool].role, 1.0)  # wave size follows the pool's size
        jobs = batch_jobs(rng_for(seed, "batch-jobs"), params.batch_jobs, duration, job_mult)

    plan = Plan(
        model=params.model,
        fleet=fleet,
        duration_s=duration,
        horizon_s=horizon,
        req=req,
        slo_ms=slo_ms,
        ttft_slo_ms=ttft_slo_ms,
        timeout_s=timeout_s,
        req_env=np.zeros(n, dtype=np.int64),
        z_pre=draw.standard_normal(n),
        z_dec=draw.standard_normal(n),
        z_xfer=draw.standard_normal(n),
        u_pick1=draw.random(n),
        u_pick2=draw.random(n),
        retry_as_arrive=draw.random(n) < 0.5,
        backoff_s=params.scheduler.retry_backoff_s * draw.uniform(0.5, 1.5, n),
        complete_delay_s=np.zeros(n),
        xfer_stall_s=np.zeros(n),
        decode_stall_s=np.zeros(n),
        xfer_retransmits=np.zeros(n, dtype=np.int64),
        jobs=jobs,
        job_pool=job_pool,
        job_gang=params.batch_jobs.gang if params.batch_jobs is not None else 1,
        dev_mult=np.ones((n_dev, horizon)),
        dev_sigma=np.full((n_dev, horizon), params.exec_sigma),
        dev_xfer_sigma=np.zeros((n_dev, horizon)),
        link_mult=np.ones((n_link, horizon)),
        link_sigma=np.full((n_link, horizon), params.network.noise_sigma),
        cotenant=np.zeros((n_host, horizon)),
        steal=np.zeros((n_host, horizon)),
        host_virt_from_s=np.where(np.asarray(fleet.host_virtualized, dtype=bool), 0.0, np.inf),
        env_names=[params.env],
        host_env_switch_s=np.full(n_host, np.inf),
        host_env_after=np.zeros(n_host, dtype=np.int64),
        queue_cap=[max(1, params.scheduler.queue_cap_per_device * len(p.devices)) for p in fleet.pools],
        cancel_on_timeout=params.scheduler.cancel_on_timeout,
        max_retries=min(params.scheduler.max_retries, MAX_ATTEMPTS - 1),
    )
    calm = rng_for(seed, "calm-cotenancy")
    for h in np.flatnonzero(np.isfinite(plan.host_virt_from_s)):
        cot, steal = cotenant_series(calm, horizon, noisy=False)
        plan.cotenant[h], plan.steal[h] = cot, steal
    for i, inj in enumerate(params.injections):
        inj.apply(plan, rng_for(seed, f"apply:{i}:{type(inj).__name__}"))
    _couple_virtualization(plan)
    return plan


def _couple_virtualization(plan: Plan) -> None:
    """Co-tenant load and steal slow down and de-stabilize the guest's GPU work."""
    sec = np.arange(plan.horizon_s)
    for dev, host in enumerate(plan.fleet.dev_host):
        start = plan.host_virt_from_s[host]
        if not np.isfinite(start):
            continue
        active = sec >= start
        cot, steal = plan.cotenant[host], plan.steal[host]
        plan.dev_mult[dev] = np.where(active, plan.dev_mult[dev] * (1.0 + 0.5 * cot + 1.0 * steal), plan.dev_mult[dev])
        plan.dev_sigma[dev] = np.where(active, np.hypot(plan.dev_sigma[dev], 0.35 * cot), plan.dev_sigma[dev])


def _replay_fleet_mult(params: SimParams, replay: ReplayedArrivals) -> dict[str, float]:
    """Size each role so the replayed demand loads it like the synthetic baseline would."""
    wl = params.workload
    rng = rng_for(0, "replay-reference")
    ref_p, ref_o = sample_tokens(rng, wl.mix, 4000, wl.max_prompt_tokens, wl.max_output_tokens)
    pre_acc = ACCELERATORS["H100-SXM"]
    dec_acc = ACCELERATORS["A100-40GB"]
    step = decode_step_ms(dec_acc, params.model, 1.0)

    def prefill_load(prompt: np.ndarray, rate: float) -> float:
        return rate * float(np.mean(prefill_ms(pre_acc, params.model, prompt.astype(np.float64))))

    def decode_load(output: np.ndarray, rate: float) -> float:
        return rate * float(np.mean(output)) * step

    rate = len(replay.arrival_s) / max(replay.duration_s, 1e-9)
    # Without token counts in the source, the replay draws the scenario's mix: its mean sizes.
    pre = prefill_load(replay.prompt if replay.prompt is not None else ref_p, rate) / prefill_load(ref_p, wl.rate_rps)
    dec = decode_load(replay.output if replay.output is not None else ref_o, rate) / decode_load(ref_o, wl.rate_rps)
    return {"prefill": max(pre, 1e-3), "decode": max(dec, 1e-3), "unified": max(dec, 1e-3), "batch": 1.0}
