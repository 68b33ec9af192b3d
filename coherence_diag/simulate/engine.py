"""Discrete-event model of a disaggregated LLM serving fleet.

Request path: arrive -> prefill pool queue -> prefill exec on one device -> KV transfer over the
source host's link (the prefill device holds the KV until it is sent) -> local queue of the
chosen decode device -> decode exec with continuous batching -> complete. Client deadlines,
retries, KV-pressure preemption, batch jobs, paced dispatch and a lagged autoscaler hang off
that path. A unified pool (colocated serving) runs both phases on one device: the router places
a request on a device with a free slot, the device runs its prefill (pausing its running decodes
for that time) and then decodes it itself; no KV transfer. An external batch system may cordon
serving devices, wait for them to drain and hold them for minutes. The loop only does arithmetic
on Python lists; every random number was drawn while the plan was built (`build.py`). Output
is a set of append-only column logs (array.array) that `assemble.py` turns into the trace.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from heapq import heappop, heappush
from itertools import count

import numpy as np

from coherence_diag.simulate.hardware import DECODE_MFU, DECODE_OVERHEAD_MS, kv_capacity_bytes, prefill_ms
from coherence_diag.simulate.plan import MAX_ATTEMPTS, Plan

# scheduler event codes (order = EVENT_NAMES)
ARRIVE, DISPATCH, FIRST_TOKEN, COMPLETE, TIMEOUT, DROP, RETRY, PREEMPT = range(8)
EVENT_NAMES = ("arrive", "dispatch", "first_token", "complete", "timeout", "drop", "retry", "preempt")
PREFILL, DECODE, BATCH_JOB = range(3)
PHASE_NAMES = ("prefill", "decode", "batch_job")

# engine-internal event types
(
    _PREFILL_DONE, _XFER_DONE, _DECODE_DONE, _TIMEOUT, _ATTEMPT, _JOB_ARRIVE, _JOB_DONE, _TICK, _CONTROL, _ONLINE, _COMPLETE,
    _HOLD_REQ, _HOLD_END,
) = range(13)  # fmt: skip
# attempt states
_LIVE, _DONE, _TIMED_OUT, _DROPPED = range(4)
_SHIFT = int(math.log2(MAX_ATTEMPTS))
_AMASK = MAX_ATTEMPTS - 1
_DROP_DECISION_S = 0.001
_XFER_BASE_S = 0.0005
_JOB_REF_TFLOPS = 312.0  # batch-job durations are given for an A100-40GB
KV_SEND_BUFFER = 4  # finished KV caches a prefill device can hold while they wait for the link
HOLD_KEY = -(1 << 62)  # key of an external hold's exec span (no request id)
_LQ = -(1 << 40)  # qloc of a request waiting in device d's local prefill queue: _LQ - d
_NEVER = 1e300  # a client deadline that never comes (clients without timeout)


@dataclass
class Logs:
    # scheduler rows; key >= 0 is request*MAX_ATTEMPTS+attempt, key < 0 is batch job -(j+1)
    # (exec spans may also carry HOLD_KEY: an external batch system's hold)
    s_t: array = field(default_factory=lambda: array("d"))
    s_ev: array = field(default_factory=lambda: array("b"))
    s_key: array = field(default_factory=lambda: array("q"))
    s_pool: array = field(default_factory=lambda: array("q"))
    s_dev: array = field(default_factory=lambda: array("q"))
    s_pred: array = field(default_factory=lambda: array("d"))
    # gpu exec spans
    x_t0: array = field(default_factory=lambda: array("d"))
    x_dur: array = field(default_factory=lambda: array("d"))
    x_dev: array = field(default_factory=lambda: array("q"))
    x_key: array = field(default_factory=lambda: array("q"))
    x_phase: array = field(default_factory=lambda: array("b"))
    x_batch: array = field(default_factory=lambda: array("q"))
    x_tok: array = field(default_factory=lambda: array("q"))
    # KV transfers (span = request view; tx0..tx1 = time the link actually carried it)
    n_t0: array = field(default_factory=lambda: array("d"))
    n_dur: array = field(default_factory=lambda: array("d"))
    n_tx0: array = field(default_factory=lambda: array("d"))
    n_tx1: array = field(default_factory=lambda: array("d"))
    n_src: array = field(default_factory=lambda: array("q"))
    n_dst: array = field(default_factory=lambda: array("q"))
    n_link: array = field(default_factory=lambda: array("q"))
    n_key: array = field(default_factory=lambda: array("q"))
    n_bytes: array = field(default_factory=lambda: array("q"))
    # queue depth changes (queue index = pool index)
    q_t: array = field(default_factory=lambda: array("d"))
    q_pool: array = field(default_factory=lambda: array("q"))
    q_delta: array = field(default_factory=lambda: array("b"))
    end_s: float = 0.0


def run(plan: Plan) -> Logs:  # noqa: C901 - one hot loop on purpose: locals are fast
    fleet = plan.fleet
    model = plan.model
    log = Logs()
    n_req = plan.n_requests
    n_dev = fleet.n_devices
    n_pool = len(fleet.pools)
    cancel = plan.cancel_on_timeout
    max_retries = plan.max_retries
    horizon = plan.horizon_s
    kvb = model.kv_bytes_per_token

    # ---- per-request inputs as Python lists (cheap indexing in the loop)
    arr = plan.req.arrival_s.tolist()
    prompt = plan.req.prompt.tolist()
    prio = plan.req.priority.tolist()
    out = plan.req.output.tolist()
    timeout_s = plan.timeout_s.tolist()
    z_pre, z_dec, z_xfer = plan.z_pre.tolist(), plan.z_dec.tolist(), plan.z_xfer.tolist()
    u1, u2 = plan.u_pick1.tolist(), plan.u_pick2.tolist()
    retry_arrive = plan.retry_as_arrive.tolist()
    backoff = plan.backoff_s.tolist()
    complete_delay = plan.complete_delay_s.tolist()
    xfer_stall = plan.xfer_stall_s.tolist()
    dec_stall = plan.decode_stall_s.tolist()
    kv_need = ((plan.req.prompt + plan.req.output) * kvb).tolist()
    kv_read = ((2 * plan.req.prompt + plan.req.output) * kvb // 2).tolist()  # time-average resident KV

    # ---- device constants
    dev_pool = list(fleet.dev_pool)
    pool_role = [p.role for p in fleet.pools]
    dev_acc = [fleet.dev_acc(d) for d in range(n_dev)]
    dev_link = [fleet.host_link[h] for h in fleet.dev_host]
    max_batch = [fleet.pools[p].max_batch for p in dev_pool]
    kv_cap = [int(kv_capacity_bytes(a, model)) for a in dev_acc]
    step_base = [DECODE_OVERHEAD_MS + model.weight_bytes / (a.mem_bw_gbs * 1e9 * a.bw_eff) * 1e3 for a in dev_acc]
    kv_ms_per_byte = [1e3 / (a.mem_bw_gbs * 1e9 * a.bw_eff) for a in dev_acc]
    flop_ms_per_seq = [2.0 * model.params / (a.peak_tflops * 1e12 * DECODE_MFU) * 1e3 for a in dev_acc]
    job_speed = [_JOB_REF_TFLOPS / a.peak_tflops for a in dev_acc]
    dev_uni = [pool_role[p] == "unified" for p in dev_pool]
    # decode admission waits for dispatcher passes only on decode pools; a unified device hands
    # its own prefilled requests to its decode batch at once (one serving engine)
    dev_paced = [fleet.pools[p].paced and not dev_uni[d] for d, p in enumerate(dev_pool)]
    dev_mult, dev_sig = _dedup_rows(plan.dev_mult), _dedup_rows(plan.dev_sigma)
    dev_xsig = _dedup_rows(plan.dev_xfer_sigma)
    link_mult, link_sig = _dedup_rows(plan.link_mult), _dedup_rows(plan.link_sigma)
    link_bw = list(fleet.link_bytes_per_s)
    link_free = [0.0] * len(link_bw)

    # prefill nominal time of every request on every prefill pool's accelerator (vectorized)
    pre_nom: list[list[float] | None] = [None] * n_pool
    pre_mean_s = [1.0] * n_pool
    for p, pool in enumerate(fleet.pools):
        if pool.role == "prefill":
            ms = prefill_ms(pool.acc, model, plan.req.prompt.astype(np.float64))
            pre_nom[p] = ms.tolist()
            pre_mean_s[p] = float(ms.mean()) / 1e3 if len(ms) else 0.05
    pre_pools = fleet.pools_with_role("prefill")
    dec_pools = fleet.pools_with_role("decode")
    uni_pools = fleet.pools_with_role("unified")
    # per device: its accelerator's nominal prefill time of every request (shared lists)
    by_acc: dict[str, list[float]] = {}
    pre_nom_dev: list[list[float]] = [[] for _ in range(n_dev)]
    for p in pre_pools + uni_pools:
        for d in fleet.pools[p].devices:
            a = dev_acc[d]
            if a.name not in by_acc:
                same = a is fleet.pools[p].acc and pre_nom[p] is not None  # a prefill pool's own list
                by_acc[a.name] = pre_nom[p] if same else prefill_ms(a, model, plan.req.prompt.astype(np.float64)).tolist()  # type: ignore[assignment]
            pre_nom_dev[d] = by_acc[a.name]
    acc_mean_s = {name: (sum(ms) / len(ms) / 1e3 if ms else 0.05) for name, ms in by_acc.items()}
    for p in uni_pools:
        devs = fleet.pools[p].devices
        pre_mean_s[p] = sum(acc_mean_s[dev_acc[d].name] for d in devs) / len(devs)
    mean_out = float(plan.req.output.mean()) if n_req else 100.0
    dec_mean_s = [0.0] * n_pool
    for p in dec_pools + uni_pools:
        d0 = fleet.pools[p].devices[0]
        dec_mean_s[p] = mean_out * (step_base[d0] + flop_ms_per_seq[d0] * fleet.pools[p].max_batch) / 1e3
    # scheduler's nominal per-token cost at batch 1, used to rank decode devices
    nom_step1 = [step_base[d] + flop_ms_per_seq[d] for d in range(n_dev)]

    # ---- mutable state
    state = bytearray(n_req * MAX_ATTEMPTS)
    qloc = [-1] * (n_req * MAX_ATTEMPTS)  # >=0 pool queue, <= -2 decode device queue (-2-dev)
    rem_tokens: dict[int, int] = {}
    started: set[int] = set()
    version: dict[int, int] = {}
    pq: list[list] = [[] for _ in range(n_pool)]
    gate: list[list] = [[] for _ in range(n_pool)]
    qlen = [0] * n_pool
    free: list[list[int]] = [[] for _ in range(n_pool)]
    dev_on = [t == 0.0 for t in fleet.dev_online_s]  # accepting new work
    dev_online = list(dev_on)
    pre_busy = [False] * n_dev
    pending_tx = [0] * n_dev  # KV caches a prefill device holds until the link has sent them
    blocked = [False] * n_dev
    kv_send_buffer = KV_SEND_BUFFER
    dq: list[list] = [[] for _ in range(n_dev)]
    dqlen = [0] * n_dev
    inflight = [0] * n_dev
    active = [0] * n_dev
    kv_res = [0] * n_dev
    kv_rd = [0] * n_dev
    running: list[dict] = [{} for _ in range(n_dev)]
    for p in pre_pools + ([plan.job_pool] if plan.job_pool >= 0 else []):
        free[p] = [d for d in reversed(fleet.pools[p].devices) if dev_on[d]]
    dec_active = [d for p in dec_pools for d in fleet.pools[p].devices if dev_on[d]]
    queue_cap = plan.queue_cap
    fifo = [p.fifo for p in fleet.pools]
    # unified devices, placement-mode dispatch, external holds
    placement = plan.paced is not None and plan.paced.placement
    placed_mode = [pool.paced and placement for pool in fleet.pools]  # pools whose work is placed only at passes
    lq: list[list[int]] = [[] for _ in range(n_dev)]  # local prefill queue (FIFO) of placed work
    lq_head = [0] * n_dev
    placed = [0] * n_dev  # live entries of lq
    est_free = [0.0] * n_dev  # nominal time a placement-mode prefill device runs out of placed work
    job_on = [False] * n_dev  # a batch job holds the whole (unified) device
    reserved = [0] * n_dev  # key of the batch job a unified device drains for (0: none)
    job_resv: dict[int, list[int]] = {}  # batch job -> the devices drained for it
    gang = max(1, plan.job_gang)  # devices a batch job takes at once on a unified pool
    held = [0] * n_dev  # external holds: 0 serving, 1 cordoned (draining), 2 held
    hold_len = [0.0] * n_dev
    dec_end: dict[int, float] = {}  # unified devices: when a running decode ends (prefills pause it)
    dec_paused: dict[int, float] = {}
    aff_home = plan.affinity_home.tolist() if plan.affinity_home is not None else None
    n_groups = max(1, plan.affinity_groups)

    def blocks(devs: list[int]) -> list[list[int]]:
        n = len(devs)
        return [devs[g * n // n_groups : (g + 1) * n // n_groups] or devs for g in range(n_groups)]

    dec_groups = blocks([d for p in dec_pools for d in fleet.pools[p].devices])
    uni_groups = [blocks(list(fleet.pools[p].devices)) if p in uni_pools else [] for p in range(n_pool)]

    # ---- log appenders
    s_t, s_ev, s_key, s_pool, s_dev, s_pred = (
        log.s_t.append, log.s_ev.append, log.s_key.append, log.s_pool.append, log.s_dev.append, log.s_pred.append
    )
    x_t0, x_dur, x_dev, x_key, x_phase, x_batch, x_tok = (
        log.x_t0.append, log.x_dur.append, log.x_dev.append, log.x_key.append,
        log.x_phase.append, log.x_batch.append, log.x_tok.append,
    )  # fmt: skip
    q_t, q_pool, q_delta = log.q_t.append, log.q_pool.append, log.q_delta.append
    nan = math.nan
    exp = math.exp

    def sched(t: float, ev: int, key: int, pool: int, dev: int, pred: float) -> None:
        s_t(t)
        s_ev(ev)
        s_key(key)
        s_pool(pool)
        s_dev(dev)
        s_pred(pred)

    def qlog(t: float, pool: int, delta: int) -> None:
        q_t(t)
        q_pool(pool)
        q_delta(delta)

    heap: list = []
    seq = count()

    def zidx(i: int, a: int) -> int:
        return i if a == 0 else (i * 7919 + a * 104729) % n_req

    def sec(t: float) -> int:
        s = int(t)
        return s if s < horizon else horizon - 1

    # ---- prefill side
    def dispatch_prefill(d: int, p: int, k: int, t: float) -> None:
        log_dispatch(d, p, k, t)
        run_prefill(d, k, t)

    def log_dispatch(d: int, p: int, k: int, t: float) -> None:
        """The scheduler's decision to run k (a request's prefill or a batch job) on d."""
        if k < 0:
            sched(t, DISPATCH, k, p, d, job_ref[-k - 1] * job_speed[d] * 1e3)
        else:
            sched(t, DISPATCH, k, p, d, pre_nom_dev[d][k >> _SHIFT])

    def run_prefill(d: int, k: int, t: float) -> None:
        """Start k's prefill (or batch job) on d now."""
        pre_busy[d] = True
        s = sec(t)
        if k < 0:
            dur = job_ref[-k - 1] * job_speed[d] * dev_mult[d][s]
            x_t0(t), x_dur(dur * 1e3), x_dev(d), x_key(k), x_phase(BATCH_JOB), x_batch(1), x_tok(-1)
            heappush(heap, (t + dur, next(seq), _JOB_DONE, k, d, 0))
            return
        i = k >> _SHIFT
        dur = pre_nom_dev[d][i] * dev_mult[d][s] * exp(dev_sig[d][s] * z_pre[zidx(i, k & _AMASK)]) / 1e3
        x_t0(t), x_dur(dur * 1e3), x_dev(d), x_key(k), x_phase(PREFILL), x_batch(1), x_tok(prompt[i])
        heappush(heap, (t + dur, next(seq), _PREFILL_DONE, k, d, 0))
        if dev_uni[d] and running[d]:
            pause_decodes(d, dur)

    # ---- device-local prefill queues (unified devices; prefill devices under placement dispatch)
    def push_local(d: int, k: int) -> None:
        lq[d].append(k)
        placed[d] += 1
        if k >= 0:
            qloc[k] = _LQ - d

    def lane_idle(d: int) -> bool:
        return not pre_busy[d] and lq_head[d] == len(lq[d])

    def lane_next(d: int, t: float) -> bool:
        """Start the next live entry of d's local queue; False if there is none."""
        q, h = lq[d], lq_head[d]
        while h < len(q):
            k = q[h]
            h += 1
            if k >= 0 and qloc[k] != _LQ - d:
                continue  # cancelled while it waited (already uncounted)
            placed[d] -= 1
            if k >= 0:
                qloc[k] = -1
            qlog(t, dev_pool[d], -1)
            lq_head[d] = h
            if h > 256:
                del q[:h]
                lq_head[d] = 0
            run_prefill(d, k, t)
            return True
        lq_head[d] = h
        return False

    def place_prefill(p: int, t: float) -> None:
        """A dispatcher pass in placement mode: every queued item onto the device that runs out
        of placed work first (by the scheduler's nominal times)."""
        devs = [d for d in fleet.pools[p].devices if dev_on[d]]
        while devs:
            k = pop_ready(p)
            if k is None:
                return
            d = min(devs, key=lambda x: (est_free[x] if est_free[x] > t else t, x))
            nominal = job_ref[-k - 1] * job_speed[d] if k < 0 else pre_nom_dev[d][k >> _SHIFT] / 1e3
            est_free[d] = max(est_free[d], t) + nominal
            log_dispatch(d, p, k, t)
            push_local(d, k)
            if not pre_busy[d] and not blocked[d]:
                lane_next(d, t)

    def pop_ready(p: int) -> int | None:
        h = pq[p]
        while h:
            k = heappop(h)[2]
            if k < 0 or qloc[k] == p:
                if k >= 0:
                    qloc[k] = -1
                qlen[p] -= 1
                return k
        return None

    def release_prefill(d: int, t: float) -> None:
        pre_busy[d] = False
        if placed_mode[dev_pool[d]]:  # runs what was placed on it, even if switched off since
            lane_next(d, t)
            return
        if not dev_on[d]:
            return
        p = dev_pool[d]
        k = pop_ready(p)
        if k is None:
            free[p].append(d)
        else:
            qlog(t, p, -1)
            dispatch_prefill(d, p, k, t)

    def enqueue_prefill(p: int, k: int, t: float, pr: int) -> None:
        if not fleet.pools[p].paced and free[p] and not qlen[p]:
            dispatch_prefill(free[p].pop(), p, k, t)
            return
        heappush(gate[p] if fleet.pools[p].paced else pq[p], (0 if fifo[p] else pr, next(seq), k))
        qlen[p] += 1
        qlog(t, p, 1)
        if k >= 0:
            qloc[k] = p

    def drain_free(p: int, t: float) -> None:
        if placed_mode[p]:
            return  # work is placed at passes only
        while free[p] and pq[p]:
            k = pop_ready(p)
            if k is None:
                break
            qlog(t, p, -1)
            dispatch_prefill(free[p].pop(), p, k, t)

    def choose_prefill_pool(i: int) -> int:
        best, best_est = pre_pools[0], math.inf
        for p in pre_pools:
            n_on = max(1, sum_on[p])
            wait = 0.0 if (free[p] and not qlen[p]) else (qlen[p] + 1) * pre_mean_s[p] / n_on
            est = wait + pre_nom[p][i] / 1e3
            if est < best_est:
                best, best_est = p, est
        return best

    # ---- decode side
    def start_decode(dd: int, k: int, t: float, need: int, kvr: int) -> None:
        i = k >> _SHIFT
        active[dd] += 1
        b = active[dd]
        kv_res[dd] += need
        kv_rd[dd] += kvr
        nom = step_base[dd] + flop_ms_per_seq[dd] * b  # scheduler's nominal model: no KV term
        s = sec(t)
        tok_ms = (nom + kv_rd[dd] * kv_ms_per_byte[dd]) * dev_mult[dd][s] * exp(
            dev_sig[dd][s] * z_dec[zidx(i, k & _AMASK)]
        )
        rem = rem_tokens.get(k, out[i])
        first = k not in started
        recompute_ms = 0.0
        if not first:  # KV was dropped at preemption: recompute prompt + generated tokens
            recompute_ms = prefill_ms(dev_acc[dd], model, prompt[i] + out[i] - rem)
        dur = (rem * tok_ms + recompute_ms) / 1e3 + (dec_stall[i] if first else 0.0)
        if dev_uni[dd]:  # one serving engine: the request was dispatched once, to this device
            dec_end[k] = t + dur
            dec_paused[k] = 0.0
        else:
            sched(t, DISPATCH, k, dev_pool[dd], dd, rem * nom + recompute_ms)
        if first:
            started.add(k)
            sched(t + (tok_ms + recompute_ms) / 1e3, FIRST_TOKEN, k, dev_pool[dd], dd, nan)
        v = version.get(k, 0) + 1
        version[k] = v
        running[dd][k] = (t, tok_ms, rem, b, v, need, kvr, recompute_ms)
        heappush(heap, (t + dur, next(seq), _DECODE_DONE, k, dd, v))

    def finish_decode(dd: int, k: int, t: float, preempted: bool) -> None:
        t0, tok_ms, rem, b, _v, need, kvr, rc = running[dd].pop(k)
        active[dd] -= 1
        kv_res[dd] -= need
        kv_rd[dd] -= kvr
        gen = rem
        paused = 0.0
        if dev_uni[dd]:
            del dec_end[k]
            paused = dec_paused.pop(k)
        if preempted:
            gen = min(rem - 1, max(0, int(((t - t0 - paused) * 1e3 - rc) / tok_ms)))
        x_t0(t0), x_dur((t - t0) * 1e3), x_dev(dd), x_key(k), x_phase(DECODE), x_batch(b), x_tok(gen)
        if preempted:
            rem_tokens[k] = rem - gen

    def enqueue_decode(dd: int, k: int, t: float) -> None:
        heappush(dq[dd], (prio[k >> _SHIFT], next(seq), k))
        dqlen[dd] += 1
        qlog(t, dev_pool[dd], 1)
        qloc[k] = -2 - dd

    def try_admit(dd: int, t: float) -> None:
        h = dq[dd]
        tag = -2 - dd
        cap = kv_cap[dd]
        while h and active[dd] < max_batch[dd]:
            pr, _, k = h[0]
            if qloc[k] != tag:
                heappop(h)
                continue
            i = k >> _SHIFT
            need = min(kv_need[i], cap)
            if kv_res[dd] + need > cap:
                victim, worst = -1, (pr, -1.0)
                for kk, r in running[dd].items():  # youngest of the lowest priority below pr
                    cand = (prio[kk >> _SHIFT], r[0])
                    if cand[0] > pr and cand > worst:
                        victim, worst = kk, cand
                if victim < 0:
                    break
                finish_decode(dd, victim, t, preempted=True)
                sched(t, PREEMPT, victim, dev_pool[dd], dd, nan)
                if state[victim] == _LIVE or not cancel:
                    enqueue_decode(dd, victim, t)
                continue
            heappop(h)
            dqlen[dd] -= 1
            qlog(t, dev_pool[dd], -1)
            qloc[k] = -1
            start_decode(dd, k, t, need, min(kv_read[i], cap))

    def pick_decode(zi: int) -> int:
        n = len(dec_active)
        a = dec_active[int(u1[zi] * n)]
        b = dec_active[int(u2[zi] * n)]
        la = (active[a] + dqlen[a] + inflight[a] + 1) * nom_step1[a]
        lb = (active[b] + dqlen[b] + inflight[b] + 1) * nom_step1[b]
        return a if la <= lb else b

    def pick_decode_affine(i: int, zi: int) -> int:
        """Affinity routing: the least loaded device of the request's home group that has a free
        slot; when the whole group is full, spill over like any other request."""
        best, best_load = -1, math.inf
        for d in dec_groups[aff_home[i]]:  # type: ignore[index]
            if not dev_on[d] or held[d]:
                continue
            used = active[d] + dqlen[d] + inflight[d]
            if used < max_batch[d] and (used + 1) * nom_step1[d] < best_load:
                best, best_load = d, (used + 1) * nom_step1[d]
        return best if best >= 0 else pick_decode(zi)

    # ---- unified devices (colocated serving): placement, prefill pauses, batch jobs, holds
    def pause_decodes(d: int, dur: float) -> None:
        """A prefill on a unified device pauses its running decodes for its whole length."""
        run_d = running[d]
        for kk, r in run_d.items():
            v = version[kk] + 1
            version[kk] = v
            run_d[kk] = (r[0], r[1], r[2], r[3], v, r[5], r[6], r[7])
            end = dec_end[kk] + dur
            dec_end[kk] = end
            dec_paused[kk] += dur
            heappush(heap, (end, next(seq), _DECODE_DONE, kk, d, v))

    def uni_least(cands: list[int]) -> int:
        best, best_load = -1, math.inf
        for d in cands:
            if not dev_on[d] or held[d] or reserved[d] or job_on[d]:
                continue
            used = active[d] + dqlen[d] + placed[d] + pre_busy[d]
            if used < max_batch[d] and (used + 1) * nom_step1[d] < best_load:
                best, best_load = d, (used + 1) * nom_step1[d]
        return best

    def pick_unified(p: int, i: int) -> int:
        """The least loaded device of pool p with a free slot (home group first under affinity)."""
        if aff_home is not None:
            d = uni_least(uni_groups[p][aff_home[i]])
            if d >= 0:
                return d
        return uni_least(fleet.pools[p].devices)

    def choose_unified_pool() -> int:
        """Least outstanding work per slot over the unified pools (class-blind, load-aware)."""
        best, best_score = uni_pools[0], math.inf
        if len(uni_pools) > 1:
            for p in uni_pools:
                devs = fleet.pools[p].devices
                busy = sum(active[d] + dqlen[d] + placed[d] + pre_busy[d] for d in devs)
                score = (qlen[p] + busy + 1) / max(1, sum_on[p] * fleet.pools[p].max_batch)
                if score < best_score:
                    best, best_score = p, score
        return best

    def dispatch_unified(d: int, p: int, k: int, t: float, queued: bool) -> None:
        i = k >> _SHIFT
        pred = pre_nom_dev[d][i] + out[i] * (step_base[d] + flop_ms_per_seq[d] * (active[d] + 1))
        sched(t, DISPATCH, k, p, d, pred)
        if lane_idle(d):
            if queued:
                qlog(t, p, -1)
            run_prefill(d, k, t)
        else:
            push_local(d, k)

    def enqueue_unified(p: int, k: int, t: float, pr: int) -> None:
        paced = fleet.pools[p].paced
        if not paced and not qlen[p] and k >= 0:
            d = pick_unified(p, k >> _SHIFT)
            if d >= 0 and lane_idle(d):
                dispatch_unified(d, p, k, t, queued=False)
                return
        heappush(gate[p] if paced else pq[p], (0 if fifo[p] else pr, next(seq), k))
        qlen[p] += 1
        qlog(t, p, 1)
        if k >= 0:
            qloc[k] = p
        if not paced:
            drain_unified(p, t)

    def idle_for_job(p: int, k: int) -> list[int]:
        """`gang` idle devices for batch job k (those drained for it first), or [] if too few."""
        found: list[int] = []
        for d in job_resv.get(k, []) + fleet.pools[p].devices:
            if (
                d not in found and dev_on[d] and not held[d] and not job_on[d] and reserved[d] in (0, k)
                and not pre_busy[d] and not active[d] and not dqlen[d] and not placed[d]
            ):  # fmt: skip
                found.append(d)
                if len(found) == gang:
                    return found
        return []

    def reserve_for_job(p: int, k: int) -> None:
        """A batch job needs whole devices (a gang of them): stop placing work on the least
        loaded ones until they drain."""
        mine = job_resv.setdefault(k, [])
        cands = sorted(
            (active[d] + dqlen[d] + placed[d] + pre_busy[d], d)
            for d in fleet.pools[p].devices
            if dev_on[d] and not held[d] and not job_on[d] and not reserved[d]
        )
        for _, d in cands[: gang - len(mine)]:
            reserved[d] = k
            mine.append(d)

    def run_gang(devs: list[int], p: int, k: int, t: float) -> None:
        """Batch job k on its devices: one dispatch, an exec span on each device, all devices
        released together when the slowest finishes (a synchronous gang)."""
        for d in job_resv.pop(k, []):
            reserved[d] = 0
        sched(t, DISPATCH, k, p, devs[0], max(job_ref[-k - 1] * job_speed[d] for d in devs) * 1e3)
        s = sec(t)
        dur = max(job_ref[-k - 1] * job_speed[d] * dev_mult[d][s] for d in devs)
        for n, d in enumerate(devs):
            job_on[d] = True
            pre_busy[d] = True
            x_t0(t), x_dur(dur * 1e3), x_dev(d), x_key(k), x_phase(BATCH_JOB), x_batch(1), x_tok(-1)
            heappush(heap, (t + dur, next(seq), _JOB_DONE, k, d, 1 if n == 0 else 0))

    def drain_unified(p: int, t: float, tick: bool = False) -> None:
        """Place queued work of unified pool p while devices have room. A batch job waits for an
        idle device (one is reserved to drain for it); a FIFO queue waits behind it, a priority
        queue lets later work pass."""
        if placed_mode[p] and not tick:
            return
        h = pq[p]
        back = []
        while h:
            k = h[0][2]
            if k >= 0:
                if qloc[k] != p:
                    heappop(h)
                    continue
                d = pick_unified(p, k >> _SHIFT)
                if d < 0:
                    break
                heappop(h)
                qlen[p] -= 1
                qloc[k] = -1
                dispatch_unified(d, p, k, t, queued=True)
                continue
            devs = idle_for_job(p, k)
            if not devs:
                reserve_for_job(p, k)
                if fifo[p]:
                    break
                back.append(heappop(h))
                continue
            heappop(h)
            qlen[p] -= 1
            qlog(t, p, -1)
            run_gang(devs, p, k, t)
        for item in back:
            heappush(h, item)

    def maybe_hold(d: int, t: float) -> None:
        """A cordoned device that has drained is taken by the external batch system."""
        if held[d] == 1 and not (active[d] or dqlen[d] or inflight[d] or placed[d] or pre_busy[d]):
            held[d] = 2
            x_t0(t), x_dur(hold_len[d] * 1e3), x_dev(d), x_key(HOLD_KEY), x_phase(BATCH_JOB), x_batch(1), x_tok(-1)
            heappush(heap, (t + hold_len[d], next(seq), _HOLD_END, 0, d, 0))

    # ---- autoscaler / online bookkeeping
    sum_on = [sum(1 for d in p.devices if dev_on[d]) for p in fleet.pools]

    def set_active(p: int, n_want: int, t: float) -> None:
        pool = fleet.pools[p]
        online = [d for d in pool.devices if dev_online[d]]
        for idx, d in enumerate(online):
            dev_on[d] = idx < n_want
        sum_on[p] = min(n_want, len(online))
        if pool.role == "unified":
            drain_unified(p, t)
        elif pool.role == "prefill" or p == plan.job_pool:
            free[p] = [d for d in reversed(pool.devices) if dev_on[d] and not pre_busy[d]]
            drain_free(p, t)

    def refresh_dec_active() -> None:
        dec_active[:] = [d for p in dec_pools for d in fleet.pools[p].devices if dev_on[d] and not held[d]]

    def capacity_per_device(p: int) -> float:
        # the scheduler's nominal throughput of one device of pool p, requests/s
        if pool_role[p] == "prefill":
            return 1.0 / pre_mean_s[p]
        if pool_role[p] == "unified":  # its prefills pause its decode batch
            return 1.0 / (pre_mean_s[p] + dec_mean_s[p] / fleet.pools[p].max_batch)
        return fleet.pools[p].max_batch / dec_mean_s[p]

    def autoscale(rate: float, t: float) -> None:
        assert scaler is not None
        for role_pools in (pre_pools, dec_pools, uni_pools):
            n_online = {p: sum(dev_online[d] for d in fleet.pools[p].devices) for p in role_pools}
            cap = {p: n_online[p] * capacity_per_device(p) for p in role_pools}
            total = sum(cap.values()) or 1.0
            for p in role_pools:
                demand = rate * cap[p] / total  # this pool's share of the arrivals
                want = math.ceil(demand / (capacity_per_device(p) * scaler.target_util))
                floor_n = max(1, math.ceil(scaler.min_frac * n_online[p]))
                set_active(p, min(n_online[p], max(floor_n, want)), t)
        refresh_dec_active()

    # ---- seed the heap
    job_ref = plan.jobs.ref_duration_s.tolist()
    for j, t in enumerate(plan.jobs.arrival_s.tolist()):
        heappush(heap, (t, next(seq), _JOB_ARRIVE, -j - 1, 0, 0))
    for d, t in enumerate(fleet.dev_online_s):
        if t > 0.0:
            heappush(heap, (t, next(seq), _ONLINE, 0, d, 0))
    tick_offsets: list[float] = []
    tick_pending = control_pending = False  # the two periodic clocks must not keep each other alive
    if plan.paced is not None:
        tick_offsets = plan.notes.get("tick_offsets", [0.0])  # type: ignore[assignment]
        heappush(heap, (plan.paced.tick_s, next(seq), _TICK, 0, 0, 0))
        tick_pending = True
    scaler = plan.autoscaler
    if scaler is not None:
        heappush(heap, (scaler.control_s, next(seq), _CONTROL, 0, 0, 0))
        control_pending = True
    holds = plan.holds
    for h_idx, (t, d, _) in enumerate(holds):
        heappush(heap, (t, next(seq), _HOLD_REQ, 0, d, h_idx))
    n_ticks = 0

    ai = 0
    while True:
        if heap and (ai >= n_req or heap[0][0] <= arr[ai]):
            t, _, et, k, d, v = heappop(heap)
        elif ai < n_req:
            t, et, k, d, v = arr[ai], _ATTEMPT, ai << _SHIFT, 0, 0
            ai += 1
        else:
            break

        if et == _DECODE_DONE:
            r = running[d].get(k)
            if r is None or r[4] != v:
                continue  # preempted meanwhile: a newer run owns this request
            finish_decode(d, k, t, preempted=False)
            delay = complete_delay[k >> _SHIFT]
            if delay > 0.0:  # response path (detokenize/stream) stalls after the GPU is done
                heappush(heap, (t + delay, next(seq), _COMPLETE, k, d, 0))
            elif state[k] == _LIVE:
                state[k] = _DONE
                sched(t, COMPLETE, k, dev_pool[d], d, nan)
            if not dev_paced[d]:
                try_admit(d, t)
            if dev_uni[d]:
                drain_unified(dev_pool[d], t)
            if held[d]:
                maybe_hold(d, t)

        elif et == _COMPLETE:
            if state[k] == _LIVE:
                state[k] = _DONE
                sched(t, COMPLETE, k, dev_pool[d], d, nan)

        elif et == _XFER_DONE:
            pending_tx[v] -= 1
            if blocked[v]:
                blocked[v] = False
                release_prefill(v, t)
            inflight[d] -= 1
            if cancel and state[k] != _LIVE:
                continue
            enqueue_decode(d, k, t)
            if not dev_paced[d]:
                try_admit(d, t)

        elif et == _PREFILL_DONE:
            i = k >> _SHIFT
            if dev_uni[d]:  # the device decodes it itself: no transfer
                pre_busy[d] = False
                if not (cancel and state[k] != _LIVE):
                    enqueue_decode(d, k, t)
                    try_admit(d, t)
                if not lane_next(d, t):
                    drain_unified(dev_pool[d], t)
                    if held[d]:
                        maybe_hold(d, t)
                continue
            if cancel and state[k] != _LIVE:
                release_prefill(d, t)
                continue
            zi = zidx(i, k & _AMASK)
            dd = pick_decode(zi) if aff_home is None else pick_decode_affine(i, zi)
            link = dev_link[d]
            nbytes = prompt[i] * kvb
            s = sec(t)
            tx0 = t if link_free[link] < t else link_free[link]
            txd = (_XFER_BASE_S + nbytes / link_bw[link]) * link_mult[link][s] * exp(
                (link_sig[link][s] + dev_xsig[dd][s]) * z_xfer[zi]
            )
            tx1 = tx0 + txd
            link_free[link] = tx1
            end = tx1 + xfer_stall[i]
            log.n_t0.append(t)
            log.n_dur.append((end - t) * 1e3)
            log.n_tx0.append(tx0)
            log.n_tx1.append(tx1)
            log.n_src.append(d)
            log.n_dst.append(dd)
            log.n_link.append(link)
            log.n_key.append(k)
            log.n_bytes.append(nbytes)
            inflight[dd] += 1
            heappush(heap, (end, next(seq), _XFER_DONE, k, dd, d))
            # the prefill device keeps computing while its send buffer has room for this KV
            pending_tx[d] += 1
            if pending_tx[d] < kv_send_buffer:
                release_prefill(d, t)
            else:
                blocked[d] = True

        elif et == _ATTEMPT:  # a new attempt (first arrival or client retry)
            i = k >> _SHIFT
            a = k & _AMASK
            p = choose_unified_pool() if uni_pools else choose_prefill_pool(i)
            if a == 0:
                sched(t, ARRIVE, k, p, -1, nan)
            else:
                sched(t, RETRY, k, p, -1, nan)
                if retry_arrive[i]:
                    sched(t, ARRIVE, k, p, -1, nan)
            if qlen[p] >= queue_cap[p]:
                state[k] = _DROPPED
                sched(t + _DROP_DECISION_S, DROP, k, p, -1, nan)
                continue
            if timeout_s[i] < _NEVER:
                heappush(heap, (t + timeout_s[i], next(seq), _TIMEOUT, k, 0, 0))
            if uni_pools:
                enqueue_unified(p, k, t, prio[i])
            else:
                enqueue_prefill(p, k, t, prio[i])

        elif et == _TIMEOUT:
            if state[k] != _LIVE:
                continue
            state[k] = _TIMED_OUT
            sched(t, TIMEOUT, k, -1, -1, nan)
            if cancel:
                loc = qloc[k]
                if loc >= 0:
                    qlen[loc] -= 1
                    qlog(t, loc, -1)
                elif loc <= -2:
                    if loc <= _LQ:  # placed on a device, prefill not started
                        dl = _LQ - loc
                        placed[dl] -= 1
                    else:
                        dl = -2 - loc
                        dqlen[dl] -= 1
                    qlog(t, dev_pool[dl], -1)
                    if dev_uni[dl]:
                        drain_unified(dev_pool[dl], t)
                    if held[dl]:
                        maybe_hold(dl, t)
                qloc[k] = -1
            a = k & _AMASK
            if a < max_retries:
                heappush(heap, (t + backoff[k >> _SHIFT] * (a + 1), next(seq), _ATTEMPT, k + 1, 0, 0))

        elif et == _JOB_ARRIVE:
            p = plan.job_pool
            sched(t, ARRIVE, k, p, -1, nan)
            if pool_role[p] == "unified":
                enqueue_unified(p, k, t, 2)
            else:
                enqueue_prefill(p, k, t, 2)

        elif et == _JOB_DONE:
            if dev_uni[d]:
                if v:  # the gang's first device reports the job's completion
                    sched(t, COMPLETE, k, dev_pool[d], d, nan)
                pre_busy[d] = False
                job_on[d] = False
                drain_unified(dev_pool[d], t)
                if held[d]:
                    maybe_hold(d, t)
            else:
                sched(t, COMPLETE, k, dev_pool[d], d, nan)
                release_prefill(d, t)

        elif et == _HOLD_REQ:  # the external batch system cordons d and takes it once drained
            if held[d]:
                continue
            held[d] = 1
            hold_len[d] = holds[v][2]
            r = reserved[d]
            if r:  # a batch job was waiting for this device: it reserves another
                reserved[d] = 0
                job_resv[r].remove(d)
            if pool_role[dev_pool[d]] == "decode":
                refresh_dec_active()
            maybe_hold(d, t)
            if r:
                drain_unified(dev_pool[d], t)

        elif et == _HOLD_END:
            held[d] = 0
            if pool_role[dev_pool[d]] == "decode":
                refresh_dec_active()
            elif dev_uni[d]:
                drain_unified(dev_pool[d], t)

        elif et == _TICK:
            for p, pool in enumerate(fleet.pools):
                if pool.paced and pool.role != "decode":
                    g = gate[p]
                    while g:
                        item = heappop(g)
                        kk = item[2]
                        if kk < 0 or qloc[kk] == p:
                            heappush(pq[p], item)
                    if pool.role == "unified":
                        drain_unified(p, t, tick=True)
                    elif placed_mode[p]:
                        place_prefill(p, t)
                    else:
                        drain_free(p, t)
            for dd in range(n_dev):
                if dev_paced[dd] and dq[dd]:
                    try_admit(dd, t)
            waiting = any(qlen) or any(dqlen) or any(inflight) or any(placed)
            tick_pending = False
            if len(heap) > control_pending or ai < n_req or waiting:  # more than the autoscaler's clock
                tick_pending = True
                n_ticks += 1
                off = tick_offsets[n_ticks % len(tick_offsets)]
                if placement:  # a fixed grid: pass n at n * tick_s (+ a little jitter)
                    at = max((n_ticks + 1) * plan.paced.tick_s + off, t + 1e-6)  # type: ignore[union-attr]
                    heappush(heap, (at, next(seq), _TICK, 0, 0, 0))
                else:
                    nxt = plan.paced.tick_s + off  # type: ignore[union-attr]
                    heappush(heap, (t + nxt, next(seq), _TICK, 0, 0, 0))

        elif et == _CONTROL:
            assert scaler is not None
            lo = bisect_left(arr, t - scaler.lag_s - scaler.window_s)
            hi = bisect_left(arr, t - scaler.lag_s)
            if t - scaler.lag_s - scaler.window_s >= 0.0:
                rate = (hi - lo) / scaler.window_s
                autoscale(rate, t)
            control_pending = False
            if len(heap) > tick_pending or ai < n_req:  # more than the dispatcher's clock
                control_pending = True
                heappush(heap, (t + scaler.control_s, next(seq), _CONTROL, 0, 0, 0))

        elif et == _ONLINE:
            dev_online[d] = True
            p = dev_pool[d]
            if fleet.pools[p].autoscaled:
                continue  # the autoscaler decides when to use it
            dev_on[d] = True
            sum_on[p] += 1
            if pool_role[p] == "decode":
                refresh_dec_active()
            elif pool_role[p] == "unified":
                drain_unified(p, t)
            else:
                release_prefill(d, t)

    # the trace ends with the last row (pending client timers of finished requests do not count)
    ends = [0.0]
    if len(log.s_t):
        ends.append(max(log.s_t))
    if len(log.x_t0):
        ends.append(float(np.max(np.frombuffer(log.x_t0, dtype=np.float64) + np.frombuffer(log.x_dur, dtype=np.float64) / 1e3)))
    if len(log.n_t0):
        ends.append(float(np.max(np.frombuffer(log.n_t0, dtype=np.float64) + np.frombuffer(log.n_dur, dtype=np.float64) / 1e3)))
    log.end_s = max(ends)
    return log


def _dedup_rows(a: np.ndarray) -> list[list[float]]:
    """Per-row Python lists, sharing one list object between identical rows (most devices)."""
    cache: dict[bytes, list[float]] = {}
    rows = []
    for row in a:
        key = row.tobytes()
        lst = cache.get(key)
        if lst is None:
            lst = row.tolist()
            cache[key] = lst
        rows.append(lst)
    return rows
