"""The concrete, fully random-drawn simulation plan the engine runs (`build.build_plan` makes it).

Every random draw happens while the plan is built (or in the telemetry noise), in numpy, from
named sub-streams of one seed, so the event loop itself is deterministic arithmetic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from coherence_diag.simulate.fleet import Fleet
from coherence_diag.simulate.hardware import Model
from coherence_diag.simulate.params import Autoscaling, Pacing
from coherence_diag.simulate.workload import JobBatch, RequestBatch

MAX_ATTEMPTS = 4  # attempt ids 0..3; the engine packs (request, attempt) into one int


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per named stream, stable across runs and Python versions."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(stream.encode()),))))


@dataclass
class Plan:
    model: Model
    fleet: Fleet
    duration_s: float
    horizon_s: int
    req: RequestBatch
    slo_ms: np.ndarray
    ttft_slo_ms: np.ndarray
    timeout_s: np.ndarray
    req_env: np.ndarray
    # per-request draws used by the engine
    z_pre: np.ndarray
    z_dec: np.ndarray
    z_xfer: np.ndarray
    u_pick1: np.ndarray
    u_pick2: np.ndarray
    retry_as_arrive: np.ndarray
    backoff_s: np.ndarray
    complete_delay_s: np.ndarray  # response-path stall between the last token and `complete`
    xfer_stall_s: np.ndarray
    decode_stall_s: np.ndarray
    xfer_retransmits: np.ndarray
    jobs: JobBatch
    job_pool: int
    job_gang: int  # devices one batch job takes at once (on a unified pool)
    # physics time series, one value per second
    dev_mult: np.ndarray  # (n_dev, H) service-time multiplier
    dev_sigma: np.ndarray  # (n_dev, H) lognormal service-time noise
    dev_xfer_sigma: np.ndarray  # (n_dev, H) extra noise on KV transfers into this device
    link_mult: np.ndarray  # (n_link, H)
    link_sigma: np.ndarray  # (n_link, H)
    cotenant: np.ndarray  # (n_host, H)
    steal: np.ndarray  # (n_host, H)
    host_virt_from_s: np.ndarray  # (n_host,) inf = bare metal for the whole trace
    env_names: list[str]
    host_env_switch_s: np.ndarray  # (n_host,) inf = never migrates
    host_env_after: np.ndarray  # (n_host,) env index after the switch
    queue_cap: list[int]
    cancel_on_timeout: bool
    max_retries: int
    paced: Pacing | None = None
    autoscaler: Autoscaling | None = None
    power_floor_frac: float | None = None
    # an external batch system's holds on serving devices: (request time s, device, hold length s)
    holds: list[tuple[float, int, float]] = field(default_factory=list)
    # affinity routing: each request's home group of devices (None: no affinity)
    affinity_home: np.ndarray | None = None
    affinity_groups: int = 0
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def n_requests(self) -> int:
        return len(self.req.arrival_s)

    def host_env_at(self, host: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Env index of each host at each time (vectorized)."""
        switched = t_s >= self.host_env_switch_s[host]
        return np.where(switched, self.host_env_after[host], 0)


def cotenant_series(
    rng: np.random.Generator,
    horizon: int,
    *,
    noisy: bool,
    burst_rate_per_s: float = 0.05,
    burst_len_s: float = 8.0,
    level: tuple[float, float] = (0.6, 0.95),
    base: float = 0.08,
) -> tuple[np.ndarray, np.ndarray]:
    """Other tenants' activity on a host (fraction) and the CPU steal it causes.

    Calm: a small AR(1) wobble around `base`. Noisy: an on/off process whose bursts push the
    co-tenants to `level`; steal grows super-linearly with co-tenant load (contention).
    """
    ar = lfilter([0.6], [1.0, -0.8], rng.standard_normal(horizon))  # AR(1) wobble
    cot = base + 0.025 * ar
    if noisy:
        on = np.zeros(horizon, dtype=bool)
        lvl = np.zeros(horizon)
        s = 0
        while s < horizon:
            gap = int(rng.exponential(1.0 / burst_rate_per_s))
            length = max(2, int(rng.exponential(burst_len_s)))
            s += gap
            on[s : s + length] = True
            lvl[s : s + length] = rng.uniform(*level)
            s += length
        cot = np.where(on, lvl + 0.03 * ar, cot)
    cot = np.clip(cot, 0.0, 1.0)
    steal = np.clip(0.01 + 0.45 * cot**1.5 + 0.005 * rng.standard_normal(horizon), 0.0, 1.0)
    return cot, steal
