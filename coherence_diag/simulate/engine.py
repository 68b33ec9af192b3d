"""Discrete-event model of a disaggregated LLM serving fleet.

Request path: arrive -> prefill pool queue -> prefill exec on one device -> KV transfer over the
source host's link (the prefill device holds the KV until it is sent) -> local queue of the
chosen decode device -> decode exec with continuous batching -> complete. Client deadlines,
retries, KV-pressure preemption, batch jobs, paced dispatch and a lagged autoscaler hang off
that path. The loop only does arithmetic on Python lists; every random number was drawn in
`plan.py`. Output is a set of append-only column logs (array.array) that `assemble.py` turns
into the trace.
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
_PREFILL_DONE, _XFER_DONE, _DECODE_DONE, _TIMEOUT, _ATTEMPT, _JOB_ARRIVE, _JOB_DONE, _TICK, _CONTROL, _ONLINE, _COMPLETE = range(11)
# attempt states
_LIVE, _DONE, _TIMED_OUT, _DROPPED = range(4)
_SHIFT = int(math.log2(MAX_ATTEMPTS))
_AMASK = MAX_ATTEMPTS - 1
_DROP_DECISION_S = 0.001
_XFER_BASE_S = 0.0005
_JOB_REF_TFLOPS = 312.0  # batch-job durations are given for an A100-40GB
KV_SEND_BUFFER = 4  # finished KV caches a prefill device can hold while they wait for the link


@dataclass
class Logs:
    # scheduler rows; key >= 0 is request*MAX_ATTEMPTS+attempt, key < 0 is batch job -(j+1)
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
    model = plan.params.model
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
    dev_paced = [fleet.pools[p].paced for p in dev_pool]
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
    mean_out = float(plan.req.output.mean()) if n_req else 100.0
    dec_mean_s = [0.0] * n_pool
    for p in dec_pools:
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
        pre_busy[d] = True
        s = sec(t)
        if k < 0:
            j = -k - 1
            pred_s = job_ref[j] * job_speed[d]
            dur = pred_s * dev_mult[d][s]
            sched(t, DISPATCH, k, p, d, pred_s * 1e3)
            x_t0(t), x_dur(dur * 1e3), x_dev(d), x_key(k), x_phase(BATCH_JOB), x_batch(1), x_tok(-1)
            heappush(heap, (t + dur, next(seq), _JOB_DONE, k, d, 0))
            return
        i = k >> _SHIFT
        nom_ms = pre_nom[p][i]
        dur = nom_ms * dev_mult[d][s] * exp(dev_sig[d][s] * z_pre[zidx(i, k & _AMASK)]) / 1e3
        sched(t, DISPATCH, k, p, d, nom_ms)
        x_t0(t), x_dur(dur * 1e3), x_dev(d), x_key(k), x_phase(PREFILL), x_batch(1), x_tok(prompt[i])
        heappush(heap, (t + dur, next(seq), _PREFILL_DONE, k, d, 0))

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
        if preempted:
            gen = min(rem - 1, max(0, int(((t - t0) * 1e3 - rc) / tok_ms)))
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

    # ---- autoscaler / online bookkeeping
    sum_on = [sum(1 for d in p.devices if dev_on[d]) for p in fleet.pools]

    def set_active(p: int, n_want: int, t: float) -> None:
        pool = fleet.pools[p]
        online = [d for d in pool.devices if dev_online[d]]
        for idx, d in enumerate(online):
            dev_on[d] = idx < n_want
        sum_on[p] = min(n_want, len(online))
        if pool.role == "prefill" or p == plan.job_pool:
            free[p] = [d for d in reversed(pool.devices) if dev_on[d] and not pre_busy[d]]
            drain_free(p, t)

    def refresh_dec_active() -> None:
        dec_active[:] = [d for p in dec_pools for d in fleet.pools[p].devices if dev_on[d]]

    def capacity_per_device(p: int) -> float:
        # the scheduler's nominal throughput of one device of pool p, requests/s
        if pool_role[p] == "prefill":
            return 1.0 / pre_mean_s[p]
        return fleet.pools[p].max_batch / dec_mean_s[p]

    def autoscale(rate: float, t: float) -> None:
        assert scaler is not None
        for role_pools in (pre_pools, dec_pools):
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
    if plan.paced is not None:
        tick_offsets = plan.notes.get("tick_offsets", [0.0])  # type: ignore[assignment]
        heappush(heap, (plan.paced.tick_s, next(seq), _TICK, 0, 0, 0))
    scaler = plan.autoscaler
    if scaler is not None:
        heappush(heap, (scaler.control_s, next(seq), _CONTROL, 0, 0, 0))
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
            if cancel and state[k] != _LIVE:
                release_prefill(d, t)
                continue
            zi = zidx(i, k & _AMASK)
            dd = pick_decode(zi)
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
            p = choose_prefill_pool(i)
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
            heappush(heap, (t + timeout_s[i], next(seq), _TIMEOUT, k, 0, 0))
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
                    dqlen[-2 - loc] -= 1
                    qlog(t, dev_pool[-2 - loc], -1)
                qloc[k] = -1
            a = k & _AMASK
            if a < max_retries:
                heappush(heap, (t + backoff[k >> _SHIFT] * (a + 1), next(seq), _ATTEMPT, k + 1, 0, 0))

        elif et == _JOB_ARRIVE:
            p = plan.job_pool
            sched(t, ARRIVE, k, p, -1, nan)
            enqueue_prefill(p, k, t, 2)

        elif et == _JOB_DONE:
            sched(t, COMPLETE, k, dev_pool[d], d, nan)
            release_prefill(d, t)

        elif et == _TICK:
            for p, pool in enumerate(fleet.pools):
                if pool.paced and pool.role != "decode":
                    g = gate[p]
                    while g:
                        item = heappop(g)
                        kk = item[2]
                        if kk < 0 or qloc[kk] == p:
                            heappush(pq[p], item)
                    drain_free(p, t)
            for dd in range(n_dev):
                if dev_paced[dd] and dq[dd]:
                    try_admit(dd, t)
            waiting = any(qlen) or any(dqlen) or any(inflight)
            if heap or ai < n_req or waiting:
                n_ticks += 1
                nxt = plan.paced.tick_s + tick_offsets[n_ticks % len(tick_offsets)]  # type: ignore[union-attr]
                heappush(heap, (t + nxt, next(seq), _TICK, 0, 0, 0))

        elif et == _CONTROL:
            assert scaler is not None
            lo = bisect_left(arr, t - scaler.lag_s - scaler.window_s)
            hi = bisect_left(arr, t - scaler.lag_s)
            if t - scaler.lag_s - scaler.window_s >= 0.0:
                rate = (hi - lo) / scaler.window_s
                autoscale(rate, t)
            if heap or ai < n_req:
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
