"""`SimParams`: everything one simulation is made of (fleet, workload, scheduler, network,
batch jobs, service noise, environment) plus the injected mechanisms.

A scenario is the baseline `SimParams` with a few fields replaced plus a tuple of named
injection mechanisms (see `injections.py`); a structural variant (`shape.Shape`, applied by
`variants.py`) replaces a few more. Nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coherence_diag.simulate.hardware import Model
from coherence_diag.simulate.injections import Injection
from coherence_diag.simulate.params import BatchJobs, Network, PoolSpec, Scheduler, Workload


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
