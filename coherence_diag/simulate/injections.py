"""Named injection mechanisms: each one adds a single physical condition to the baseline.

An injection can add devices, reshape the arrival rate, add a request stream, or change the
plan's physics series / scheduler behaviour. It never emits rows itself: whatever shows up
in the trace is produced by the engine and telemetry from the changed physics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coherence_diag.simulate.fleet import DeviceGroup, Fleet
from coherence_diag.simulate.params import Autoscaling, Pacing
from coherence_diag.simulate.plan import Plan, cotenant_series
from coherence_diag.simulate.workload import RateProfile, RequestBatch


class Injection:
    """Base: every hook is a no-op."""

    def devices(self, duration_s: float) -> list[DeviceGroup]:
        return []

    def shape_rate(self, profile: RateProfile, rng: np.random.Generator) -> None:
        return None

    def extra_requests(self, fleet: Fleet, duration_s: float, rng: np.random.Generator) -> RequestBatch | None:
        return None

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        return None


def _seconds(plan: Plan) -> np.ndarray:
    return np.arange(plan.horizon_s, dtype=float)


# --- arrival shape -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrivalBursts(Injection):
    """Short spikes of extra traffic, one per equal segment of [start_frac, end_frac]."""

    n_bursts: int
    burst_s: float
    factor: float
    start_frac: float = 0.1
    end_frac: float = 0.8

    def burst_starts(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.start_frac * duration_s, self.end_frac * duration_s
        seg = (hi - lo) / max(self.n_bursts, 1)
        room = max(seg - self.burst_s, 0.0)
        return lo + seg * np.arange(self.n_bursts) + rng.uniform(0.0, 1.0, self.n_bursts) * room

    def shape_rate(self, profile: RateProfile, rng: np.random.Generator) -> None:
        in_burst = np.zeros(len(profile.mult), dtype=bool)  # overlapping bursts do not compound
        for start in self.burst_starts(profile.duration_s, rng):
            in_burst[profile.window(start, start + self.burst_s)] = True
        profile.mult[in_burst] *= self.factor


@dataclass(frozen=True)
class OnOffDemand(Injection):
    """Square-wave demand: `high` for on_frac of each period, `low` for the rest."""

    period_s: float
    on_frac: float
    high: float
    low: float

    def shape_rate(self, profile: RateProfile, rng: np.random.Generator) -> None:
        t = np.arange(len(profile.mult)) * profile.dt_s
        on = (t % self.period_s) < self.on_frac * self.period_s
        profile.mult *= np.where(on, self.high, self.low)


@dataclass(frozen=True)
class DemandStep(Injection):
    at_frac: float
    factor: float

    def shape_rate(self, profile: RateProfile, rng: np.random.Generator) -> None:
        profile.mult[profile.window(self.at_frac * profile.duration_s, profile.duration_s)] *= self.factor


# --- extra work ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LongTaskClumps(Injection):
    """Fan-outs of long, low-priority generations (agent / report jobs) that grab decode slots.

    Each clump is sized to a fraction of all decode slots, so it can fill them; the tasks are
    non-preemptible once running, which is what locks the slots.
    """

    every_s: float
    slot_frac: float
    output_range: tuple[int, int] = (1500, 3000)
    prompt_median: float = 600.0
    priority: int = 2
    spread_s: float = 1.5
    first_s: float = 8.0

    def extra_requests(self, fleet: Fleet, duration_s: float, rng: np.random.Generator) -> RequestBatch | None:
        slots = sum(len(p.devices) * p.max_batch for p in fleet.pools if p.serves("decode"))
        per_clump = max(1, int(round(self.slot_frac * slots)))
        starts = np.arange(self.first_s, duration_s * 0.85, self.every_s)
        if len(starts) == 0:
            return None
        t = np.repeat(starts, per_clump) + rng.uniform(0.0, self.spread_s, len(starts) * per_clump)
        n = len(t)
        prompt = np.rint(self.prompt_median * np.exp(0.4 * rng.standard_normal(n))).astype(np.int64)
        output = rng.integers(self.output_range[0], self.output_range[1] + 1, n).astype(np.int64)
        return RequestBatch(t, np.maximum(prompt, 8), output, np.full(n, self.priority, dtype=np.int64))


# --- fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddDevices(Injection):
    """Devices that come online mid-trace in another rack, reachable only through `uplink_gbs`."""

    pool: str
    n_devices: int
    at_frac: float
    rack: str
    uplink_gbs: float

    def devices(self, duration_s: float) -> list[DeviceGroup]:
        return [DeviceGroup(self.pool, self.n_devices, self.at_frac * duration_s, self.rack, self.uplink_gbs)]


# --- device physics ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassDrift(Injection):
    """One accelerator class slows down progressively (throttling, allocator fragmentation).

    The scheduler keeps its nominal model, so predicted_ms stays put while realized time drifts;
    KV transfers into the affected hosts get noisier as they go.
    """

    accelerator: str
    role: str
    final_factor: float
    xfer_sigma: float = 0.5
    shape: float = 1.3  # >1: slow start, accelerating drift

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        ramp = np.clip(_seconds(plan) / plan.duration_s, 0.0, 1.0) ** self.shape
        for dev in range(plan.fleet.n_devices):
            pool = plan.fleet.pools[plan.fleet.dev_pool[dev]]
            if plan.fleet.dev_acc(dev).name == self.accelerator and pool.serves(self.role):
                plan.dev_mult[dev] *= 1.0 + (self.final_factor - 1.0) * ramp
                plan.dev_xfer_sigma[dev] += self.xfer_sigma * ramp


@dataclass(frozen=True)
class CoTenantInterference(Injection):
    """Some hosts of a role become VMs whose neighbours run bursty work on the same GPUs/CPUs."""

    role: str = "decode"
    host_frac: float = 0.4
    burst_rate_per_s: float = 0.05
    burst_len_s: float = 8.0
    level: tuple[float, float] = (0.6, 0.95)

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        fleet = plan.fleet
        for pool in fleet.pools:
            if not pool.serves(self.role):
                continue
            hosts = sorted({fleet.dev_host[d] for d in pool.devices if fleet.dev_online_s[d] == 0.0})
            n_virt = min(len(hosts) - 1, max(1, math.ceil(self.host_frac * len(hosts))))
            chosen = hosts[len(hosts) - n_virt :]
            if pool.role == "unified":  # a pool of several classes: VMs spread over all of them
                chosen = [hosts[int(j * len(hosts) / n_virt)] for j in range(n_virt)]
            for h in chosen:
                fleet.host_virtualized[h] = True
                plan.host_virt_from_s[h] = 0.0
                plan.cotenant[h], plan.steal[h] = cotenant_series(
                    rng,
                    plan.horizon_s,
                    noisy=True,
                    burst_rate_per_s=self.burst_rate_per_s,
                    burst_len_s=self.burst_len_s,
                    level=self.level,
                )


@dataclass(frozen=True)
class Migration(Injection):
    """All hosts move from the baseline env to `to_env` (staggered over `window_s`).

    The target env is virtualized with moderate co-tenancy, its services run somewhat slower
    with a heavier tail, and its network is slower and noisier. Nothing fails.
    """

    to_env: str = "cloud-a"
    at_frac: float = 0.5
    window_s: float = 6.0
    exec_factor: float = 1.2
    exec_sigma: float = 0.3
    link_factor: float = 2.5
    link_sigma: float = 0.5
    cotenant_base: float = 0.2

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        env = len(plan.env_names)
        plan.env_names.append(self.to_env)
        at = self.at_frac * plan.duration_s
        n_host = len(plan.fleet.host_name)
        switch = at - self.window_s + self.window_s * (np.arange(n_host) + 1) / n_host
        plan.host_env_switch_s[:] = switch
        plan.host_env_after[:] = env
        plan.req_env[:] = np.where(plan.req.arrival_s >= at, env, 0)
        sec = _seconds(plan)
        for h in range(n_host):
            cot, steal = cotenant_series(rng, plan.horizon_s, noisy=False, base=self.cotenant_base)
            after = sec >= switch[h]
            if np.isfinite(plan.host_virt_from_s[h]):  # already a VM: keep its own neighbours
                plan.cotenant[h] = np.where(after, np.maximum(plan.cotenant[h], cot), plan.cotenant[h])
                plan.steal[h] = np.where(after, np.maximum(plan.steal[h], steal), plan.steal[h])
            else:
                plan.cotenant[h], plan.steal[h] = cot, steal
                plan.host_virt_from_s[h] = math.ceil(switch[h])
        dev_after = sec[None, :] >= switch[np.asarray(plan.fleet.dev_host)][:, None]
        plan.dev_mult *= np.where(dev_after, self.exec_factor, 1.0)
        plan.dev_sigma = np.where(dev_after, np.maximum(plan.dev_sigma, self.exec_sigma), plan.dev_sigma)
        link_host = np.full(len(plan.fleet.link_name), n_host - 1)
        for h, link in enumerate(plan.fleet.host_link):
            if link >= 0:
                link_host[link] = h
        link_after = sec[None, :] >= switch[link_host][:, None]
        plan.link_mult *= np.where(link_after, self.link_factor, 1.0)
        plan.link_sigma = np.where(link_after, self.link_sigma, plan.link_sigma)
        plan.notes["migration_s"] = at


@dataclass(frozen=True)
class SyncStallWindows(Injection):
    """Periodic synchronization stalls (e.g. a background weight broadcast) that stretch every
    inference kernel by `factor` for `length_s`; the GPUs keep spinning through them."""

    every_s: float
    length_s: float
    factor: float
    jitter_s: float = 4.0

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        starts = np.arange(self.every_s / 2, plan.duration_s, self.every_s)
        starts = starts + rng.uniform(-self.jitter_s, self.jitter_s, len(starts))
        mask = np.zeros(plan.horizon_s, dtype=bool)
        for s in starts:
            mask[max(0, int(s)) : max(0, int(s + self.length_s))] = True
        inference = np.array([plan.fleet.pools[p].role != "batch" for p in plan.fleet.dev_pool])
        plan.dev_mult[np.ix_(inference, mask)] *= self.factor
        plan.notes["stall_windows_s"] = [(float(s), float(s + self.length_s)) for s in starts]


@dataclass(frozen=True)
class DiffuseStalls(Injection):
    """Many small, unrelated delays spread over the serving path: KV transfers hitting a
    retransmission timeout, host-side stalls between decode steps, and response-path stalls
    (detokenize / stream flush) after the last token. None holds a queue or saturates a device."""

    xfer_prob: float = 0.15
    xfer_stall_s: tuple[float, float] = (0.2, 1.2)  # RTO-style: 200 ms minimum
    decode_prob: float = 0.25
    decode_stall_s: tuple[float, float] = (0.8, 3.0)
    complete_prob: float = 0.2
    complete_stall_s: tuple[float, float] = (0.8, 3.0)

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        n = plan.n_requests

        def draw(prob: float, rng_s: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
            hit = rng.random(n) < prob
            return hit, np.where(hit, rng.uniform(*rng_s, n), 0.0)

        _, plan.complete_delay_s = draw(self.complete_prob, self.complete_stall_s)
        hit, plan.xfer_stall_s = draw(self.xfer_prob, self.xfer_stall_s)
        plan.xfer_retransmits = np.where(hit, 1 + rng.poisson(2.0, n), 0).astype(np.int64)
        _, plan.decode_stall_s = draw(self.decode_prob, self.decode_stall_s)


# --- scheduler / control plane -------------------------------------------------------------


@dataclass(frozen=True)
class PacedDispatcher(Injection):
    """A serialized, batch-style dispatcher: it admits queued work only on periodic passes, so
    requests wait for the next pass even when devices are idle."""

    tick_s: float = 2.5
    jitter_s: float = 0.3
    placement: bool = False  # see params.Pacing

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        plan.paced = Pacing(self.tick_s, self.jitter_s, self.placement)
        plan.notes["tick_offsets"] = rng.uniform(-self.jitter_s, self.jitter_s, 1024).tolist()
        for pool in plan.fleet.pools:
            if pool.role in ("prefill", "decode", "unified"):
                pool.paced = True


@dataclass(frozen=True)
class LaggedAutoscaler(Injection):
    """Sizes each inference pool's active devices from the arrival rate seen `lag_s` ago."""

    control_s: float = 5.0
    lag_s: float = 10.0
    window_s: float = 5.0
    target_util: float = 0.7
    min_frac: float = 0.1

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        plan.autoscaler = Autoscaling(self.control_s, self.lag_s, self.window_s, self.target_util, self.min_frac)
        for pool in plan.fleet.pools:
            if pool.role in ("prefill", "decode", "unified"):
                pool.autoscaled = True


@dataclass(frozen=True)
class SpinPowerFloor(Injection):
    """The runtime busy-polls between kernels, holding board power near `frac` of TDP."""

    frac: float = 0.85

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        plan.power_floor_frac = self.frac


@dataclass(frozen=True)
class AffinityRouting(Injection):
    """Routing prefers a per-request home subset of the serving devices (prefix-cache or session
    affinity) and spills over to the rest only when every device of that subset is full. Home
    subsets are not equally popular (a few hot prefixes): popularity ~ 1 / rank**skew."""

    groups: int = 4
    skew: float = 1.0

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        w = 1.0 / np.arange(1, self.groups + 1, dtype=float) ** self.skew
        plan.affinity_home = rng.choice(self.groups, size=plan.n_requests, p=w / w.sum()).astype(np.int64)
        plan.affinity_groups = self.groups


# --- an external batch system ---------------------------------------------------------------


@dataclass(frozen=True)
class ExternalHolds(Injection):
    """An external batch system (training or evaluation jobs scheduled by another system on the
    same cluster) takes serving devices for minutes: it cordons a few devices (one host's worth),
    waits until the serving engine has drained them, then holds them. The serving scheduler never
    sees these jobs; the GPU layer shows each hold as one exec span without a request id.

    On average `share` of the serving (decode or unified) devices are held; each hold lasts at
    least `min_hold_s` and ends by `end_slack_s` after the arrival window.
    """

    share: float = 0.1
    per_wave: int = 2
    hold_median_s: float = 150.0
    hold_sigma: float = 0.35
    min_hold_s: float = 60.0
    first_frac: float = 0.05
    end_slack_s: float = 15.0

    def apply(self, plan: Plan, rng: np.random.Generator) -> None:
        fleet = plan.fleet
        devs = [d for p in fleet.pools if p.role in ("decode", "unified") for d in p.devices if fleet.dev_online_s[d] == 0.0]
        if not devs:
            return
        concurrent = max(1.0, self.share * len(devs))
        per_wave = max(1, min(self.per_wave, int(concurrent)))
        interval = self.hold_median_s * per_wave / concurrent
        free_at = dict.fromkeys(devs, -math.inf)
        nxt = int(rng.integers(len(devs)))
        t = self.first_frac * plan.duration_s + rng.uniform(0.0, 0.5) * interval
        last = plan.duration_s + self.end_slack_s - self.min_hold_s
        while t < min(plan.duration_s, last):
            for _ in range(per_wave):
                for step in range(len(devs)):  # next device in rotation that is not held
                    d = devs[(nxt + step) % len(devs)]
                    if free_at[d] <= t:
                        nxt = (nxt + step + 1) % len(devs)
                        break
                else:
                    break
                length = self.hold_median_s * math.exp(self.hold_sigma * rng.standard_normal())
                length = max(self.min_hold_s, min(length, plan.duration_s + self.end_slack_s - t))
                plan.holds.append((float(t), d, float(length)))
                free_at[d] = t + length + 30.0  # drain time before the hold starts
            t += interval * rng.uniform(0.6, 1.4)
        plan.holds.sort()
