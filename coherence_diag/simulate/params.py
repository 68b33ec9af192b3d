"""The parts of a simulation's parameters, as plain frozen dataclasses (data only).

`spec.SimParams` puts them together with the injection mechanisms; nothing here runs anything
or imports another part of the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# prefill / decode: the two halves of disaggregated serving (KV travels between them);
# unified: a device that runs both phases of a request itself (colocated serving);
# batch: a pool that only runs batch jobs.
Role = Literal["prefill", "decode", "unified", "batch"]
ROLE_SERVES: dict[str, tuple[str, ...]] = {
    "prefill": ("prefill",),
    "decode": ("decode",),
    "unified": ("prefill", "decode", "unified"),
    "batch": ("batch",),
}


def serves(role: str, phase_role: str) -> bool:
    """Does a pool of `role` do the work of a `phase_role` pool (a unified pool does both phases)?"""
    return phase_role in ROLE_SERVES[role]


@dataclass(frozen=True)
class TokenMix:
    """One component of the request-size mixture (lognormal prompt and output lengths)."""

    weight: float
    prompt_median: float
    prompt_sigma: float
    output_median: float
    output_sigma: float


@dataclass(frozen=True)
class PoolSpec:
    name: str
    role: Role
    accelerator: str
    n_devices: int
    devices_per_host: int = 2
    max_batch: int = 1  # concurrent sequences per device (prefill and batch devices run one job)
    virtualized_hosts: int = 0  # the last N hosts of the pool are VMs with calm co-tenants
    fifo: bool = False  # priority-blind, arrival-ordered queue (batch-style scheduler)
    mig_profile: str | None = None


@dataclass(frozen=True)
class Workload:
    rate_rps: float = 16.0
    duration_s: float = 300.0
    # Azure-2023-like blend: chat (long-ish outputs) and code completion (long prompts, short outputs).
    mix: tuple[TokenMix, ...] = (
        TokenMix(0.55, 1000.0, 0.7, 120.0, 0.8),
        TokenMix(0.45, 1900.0, 0.6, 25.0, 0.9),
    )
    priority_probs: tuple[float, float, float] = (0.2, 0.5, 0.3)
    ttft_slo_base_ms: float = 800.0
    ttft_slo_per_prompt_token_ms: float = 0.25
    tpot_slo_ms: float = 35.0
    timeout_factor: float = 4.0  # client deadline = factor x slo_ms
    min_timeout_ms: float = 5_000.0
    max_prompt_tokens: int = 32_768
    max_output_tokens: int = 4_096


@dataclass(frozen=True)
class BatchJobs:
    pool: str
    mean_interval_s: float = 30.0
    per_wave: int = 1
    duration_median_s: float = 25.0  # on an A100-40GB; faster devices finish sooner
    duration_sigma: float = 0.4
    gang: int = 1  # devices one job takes at once, all drained first (unified pools)


@dataclass(frozen=True)
class Scheduler:
    cancel_on_timeout: bool = True  # server notices the client left and discards queued work
    max_retries: int = 0
    retry_backoff_s: float = 0.5
    queue_cap_per_device: int = 400  # admission control: beyond this the request is dropped


@dataclass(frozen=True)
class Network:
    nic_gbs: float = 50.0  # 400 Gb/s RDMA NIC per prefill host
    nic_eff: float = 0.8
    base_latency_ms: float = 0.5
    noise_sigma: float = 0.08


@dataclass(frozen=True)
class Pacing:
    """A periodic dispatcher. By default (placement=False) it admits queued work only on passes
    every tick_s (plus jitter, drifting), and admitted work starts whenever a device is free.
    With placement=True the passes sit on a fixed grid (k * tick_s + jitter) and the dispatcher
    places queued work onto devices only at a pass; devices run what was placed on them from a
    local queue."""

    tick_s: float
    jitter_s: float
    placement: bool = False


@dataclass(frozen=True)
class Autoscaling:
    """Sizes each inference pool's active devices from the arrival rate seen `lag_s` ago."""

    control_s: float
    lag_s: float
    window_s: float
    target_util: float
    min_frac: float
