"""Scenario parameters as plain frozen dataclasses.

A scenario is the baseline `SimParams` with a few fields replaced plus a tuple of named
injection mechanisms (see `injections.py`). Nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from coherence_diag.simulate.hardware import Model

if TYPE_CHECKING:
    from coherence_diag.simulate.injections import Injection

Role = Literal["prefill", "decode", "batch"]


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
class SimParams:
    pools: tuple[PoolSpec, ...]
    model: Model = field(default_factory=Model)
    workload: Workload = field(default_factory=Workload)
    scheduler: Scheduler = field(default_factory=Scheduler)
    network: Network = field(default_factory=Network)
    batch_jobs: BatchJobs | None = None
    exec_sigma: float = 0.06  # run-to-run service-time noise on bare metal
    env: str = "onprem"
    injections: tuple[Injection, ...] = ()
