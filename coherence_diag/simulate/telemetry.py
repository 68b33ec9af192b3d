"""Per-second telemetry derived from what the engine actually simulated.

GPU utilization is the union of the device's exec spans in each second; SM and DRAM activity
come from the same roofline step model the engine used, evaluated at the batch and KV
occupancy the spans imply; queue depth is the running sum of enqueue/dequeue records; link
utilization is the union of the link's busy intervals. Everything is vectorized over
(entity, second) with cumulative sums, so cost is O(spans + entities x seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coherence_diag.simulate.engine import BATCH_JOB, DECODE, PREFILL, Logs
from coherence_diag.simulate.hardware import DECODE_MFU, DECODE_OVERHEAD_MS, kv_capacity_bytes
from coherence_diag.simulate.plan import MAX_ATTEMPTS, Plan

_SHIFT = int(np.log2(MAX_ATTEMPTS))


def bin_integral(group: np.ndarray, t0: np.ndarray, t1: np.ndarray, w: np.ndarray, n_groups: int, n_bins: int) -> np.ndarray:
    """out[g, s] = sum over spans of group g of w * |[t0, t1) intersect [s, s+1)|.

    F(T) = sum w*((T-t0)+ - (T-t1)+) is piecewise linear; at integer T it is T*S(T) - Q(T)
    with S, Q cumulative sums of slope changes (and slope*time) bucketed by first T > t.
    """
    out = np.zeros((n_groups, n_bins))
    if len(group) == 0 or n_bins == 0:
        return out
    width = n_bins + 1
    te = np.concatenate([t0, t1])
    se = np.concatenate([w, -w])
    g = np.concatenate([group, group])
    idx = np.floor(te).astype(np.int64) + 1
    keep = idx <= n_bins
    flat = g[keep] * width + idx[keep]
    s = np.bincount(flat, weights=se[keep], minlength=n_groups * width).reshape(n_groups, width)
    q = np.bincount(flat, weights=(se * te)[keep], minlength=n_groups * width).reshape(n_groups, width)
    f = np.arange(width)[None, :] * np.cumsum(s, axis=1) - np.cumsum(q, axis=1)
    return np.diff(f, axis=1)


def union_coverage(group: np.ndarray, t0: np.ndarray, t1: np.ndarray, n_groups: int, n_bins: int) -> np.ndarray:
    """Fraction of each second covered by at least one interval of the group."""
    if len(group) == 0:
        return np.zeros((n_groups, n_bins))
    order = np.lexsort((t0, group))
    g, a, b = group[order], t0[order], t1[order]
    big = float(max(np.max(b), 1.0)) + 10.0
    run_end = np.maximum.accumulate(g * big + b)
    new = np.ones(len(g), dtype=bool)
    new[1:] = (g[1:] * big + a[1:]) > run_end[:-1]
    starts = np.flatnonzero(new)
    ends = np.maximum.reduceat(b, starts)
    cov = bin_integral(g[starts], a[starts], ends, np.ones(len(starts)), n_groups, n_bins)
    return np.clip(cov, 0.0, 1.0)


@dataclass
class Samples:
    """Column arrays of one kind of sample row; `entity` indexes devices, pools, links or hosts."""

    entity: np.ndarray
    t_s: np.ndarray
    cols: dict[str, np.ndarray]


def _alive_grid(online_s: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(entity, bin) pairs for every second from the entity's first second to the end."""
    first = np.ceil(np.asarray(online_s, dtype=float)).astype(np.int64)
    counts = np.maximum(n_bins - first, 0)
    ent = np.repeat(np.arange(len(first)), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return ent, np.repeat(first, counts) + offs


def gpu_samples(plan: Plan, logs: Logs, n_bins: int, rng: np.random.Generator) -> tuple[Samples, np.ndarray]:
    fleet, model = plan.fleet, plan.model
    n_dev = fleet.n_devices
    dev = np.frombuffer(logs.x_dev, dtype=np.int64)
    t0 = np.frombuffer(logs.x_t0, dtype=np.float64)
    t1 = t0 + np.frombuffer(logs.x_dur, dtype=np.float64) / 1e3
    phase = np.frombuffer(logs.x_phase, dtype=np.int8)
    key = np.frombuffer(logs.x_key, dtype=np.int64)

    busy = union_coverage(dev, t0, t1, n_dev, n_bins)

    def occ(mask: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        weights = np.ones(int(mask.sum())) if w is None else w
        return bin_integral(dev[mask], t0[mask], t1[mask], weights, n_dev, n_bins)

    is_dec = phase == DECODE
    req = np.maximum(key[is_dec], 0) >> _SHIFT
    prompt, output = plan.req.prompt[req], plan.req.output[req]
    caps = np.array([kv_capacity_bytes(fleet.dev_acc(d), model) for d in range(n_dev)])
    kvb = model.kv_bytes_per_token
    kv_reserved = np.minimum((prompt + output) * kvb, caps[dev[is_dec]])
    kv_read = np.minimum((prompt + output / 2.0) * kvb, caps[dev[is_dec]])

    occ_pre = occ(phase == PREFILL)
    occ_job = occ(phase == BATCH_JOB)
    occ_dec = occ(is_dec)
    kv_res_int = occ(is_dec, kv_reserved.astype(float))
    kv_read_int = occ(is_dec, kv_read.astype(float))

    f_pre = np.minimum(busy, occ_pre)
    f_job = np.minimum(busy - f_pre, occ_job)
    f_dec = np.clip(busy - f_pre - f_job, 0.0, 1.0)
    safe = np.where(f_dec > 1e-9, f_dec, 1.0)
    batch = np.where(f_dec > 1e-9, occ_dec / safe, 0.0)
    kv_mean = np.where(f_dec > 1e-9, kv_read_int / safe, 0.0)

    acc = [fleet.dev_acc(d) for d in range(n_dev)]
    bw = np.array([a.mem_bw_gbs * 1e9 * a.bw_eff for a in acc])[:, None]
    flop_ms = np.array([2.0 * model.params / (a.peak_tflops * 1e12 * DECODE_MFU) * 1e3 for a in acc])[:, None]
    t_mem = (model.weight_bytes + kv_mean) / bw * 1e3
    t_flop = flop_ms * batch
    t_step = DECODE_OVERHEAD_MS + t_mem + t_flop
    sm_dec = np.clip(0.2 + 0.6 * t_flop / t_step + 0.01 * batch, 0.0, 0.95)
    mem_dec = np.clip(t_mem / t_step, 0.0, 0.99)

    sm = f_pre * 0.92 + f_job * 0.80 + f_dec * sm_dec
    mem = f_pre * 0.30 + f_job * 0.55 + f_dec * mem_dec
    kv_util = kv_res_int / caps[:, None]

    ent, s = _alive_grid(np.asarray(fleet.dev_online_s), n_bins)
    noise = rng.normal(0.0, 1.0, (4, len(ent)))
    sm_v = np.clip(sm[ent, s] * (1 + 0.02 * noise[0]), 0.0, 1.0)
    mem_v = np.clip(mem[ent, s] * (1 + 0.02 * noise[1]), 0.0, 1.0)
    idle_w = np.array([a.idle_w for a in acc])[ent]
    tdp_w = np.array([a.tdp_w for a in acc])[ent]
    dyn = 0.55 * sm_v + 0.45 * mem_v
    power = idle_w + (tdp_w - idle_w) * dyn + 0.01 * (tdp_w - idle_w) * noise[2]
    if plan.power_floor_frac is not None:  # busy-polling runtime: power pinned regardless of work
        floor = idle_w + (tdp_w - idle_w) * plan.power_floor_frac * (1 + 0.01 * noise[3])
        power = np.maximum(power, floor)
    cols = {
        "gpu_util": np.round(busy[ent, s], 4),
        "sm_active": np.round(sm_v, 4),
        "mem_bw_util": np.round(mem_v, 4),
        "kv_cache_util": np.round(np.clip(kv_util[ent, s], 0.0, 1.0), 4),
        "power_w": np.round(np.clip(power, 0.0, None), 1),
    }
    return Samples(ent, s + 1.0, cols), busy


def queue_samples(plan: Plan, logs: Logs, n_bins: int) -> Samples:
    """Depth of each pool's queue at the end of every second (instantaneous gauge)."""
    n_pool = len(plan.fleet.pools)
    t = np.frombuffer(logs.q_t, dtype=np.float64)
    pool = np.frombuffer(logs.q_pool, dtype=np.int64)
    delta = np.frombuffer(logs.q_delta, dtype=np.int8).astype(np.int64)
    width = n_bins + 1
    idx = np.minimum(np.ceil(t).astype(np.int64), n_bins)
    depth = np.cumsum(np.bincount(pool * width + idx, weights=delta, minlength=n_pool * width).reshape(n_pool, width), axis=1)
    ent = np.repeat(np.arange(n_pool), n_bins)
    s = np.tile(np.arange(1, n_bins + 1), n_pool)
    return Samples(ent, s.astype(float), {"depth": np.rint(depth[ent, s]).astype(np.int64)})


def link_samples(plan: Plan, logs: Logs, n_bins: int, rng: np.random.Generator) -> Samples:
    n_link = len(plan.fleet.link_name)
    link = np.frombuffer(logs.n_link, dtype=np.int64)
    tx0 = np.frombuffer(logs.n_tx0, dtype=np.float64)
    tx1 = np.frombuffer(logs.n_tx1, dtype=np.float64)
    util = union_coverage(link, tx0, tx1, n_link, n_bins)
    key = np.frombuffer(logs.n_key, dtype=np.int64)
    rtx = plan.xfer_retransmits[key >> _SHIFT] if len(key) else np.zeros(0, dtype=np.int64)
    start_bin = np.minimum(np.floor(tx0).astype(np.int64), n_bins - 1) if n_bins else tx0.astype(np.int64)
    attributed = np.bincount(link * n_bins + start_bin, weights=rtx, minlength=n_link * n_bins).reshape(n_link, n_bins)
    # a link appears once the first device behind it is online
    host_online = np.full(len(plan.fleet.host_name), np.inf)
    np.minimum.at(host_online, np.asarray(plan.fleet.dev_host), np.asarray(plan.fleet.dev_online_s))
    first_use = np.full(n_link, np.inf)
    host_link = np.asarray(plan.fleet.host_link)
    has = host_link >= 0
    np.minimum.at(first_use, host_link[has], host_online[has])
    first_use = np.where(np.isfinite(first_use), first_use, 0.0)
    ent, s = _alive_grid(first_use, n_bins)
    sig = plan.link_sigma[ent, np.minimum(s, plan.horizon_s - 1)]
    lam = 2.0 * util[ent, s] ** 2 + 10.0 * util[ent, s] * np.maximum(sig - 0.08, 0.0)
    retrans = attributed[ent, s].astype(np.int64) + rng.poisson(lam)
    return Samples(ent, s + 1.0, {"link_util": np.round(util[ent, s], 4), "retransmits": retrans})


def hypervisor_samples(plan: Plan, busy: np.ndarray, n_bins: int, rng: np.random.Generator) -> Samples:
    """One row per second per device on a virtualized host, from the moment it is a VM."""
    fleet = plan.fleet
    start = np.array(
        [max(plan.host_virt_from_s[h], fleet.dev_online_s[d]) for d, h in enumerate(fleet.dev_host)], dtype=float
    )
    start = np.where(np.isfinite(start), start, float(n_bins))
    ent, s = _alive_grid(start, n_bins)
    host = np.asarray(fleet.dev_host, dtype=np.int64)[ent]
    si = np.minimum(s, plan.horizon_s - 1)
    cot = plan.cotenant[host, si]
    steal = np.clip(plan.steal[host, si] + 0.004 * rng.standard_normal(len(ent)), 0.0, 1.0)
    wait = np.clip(1e3 * 0.35 * cot * (0.15 + busy[ent, s]) * (1 + 0.1 * rng.standard_normal(len(ent))), 0.0, 1e3)
    cols = {
        "steal_frac": np.round(steal, 4),
        "cotenant_util": np.round(cot, 4),
        "vgpu_wait_ms": np.round(wait, 2),
    }
    return Samples(ent, s + 1.0, cols)
