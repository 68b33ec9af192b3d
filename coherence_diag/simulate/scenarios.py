"""The scenario catalogue: the healthy baseline plus one injected condition each."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from coherence_diag.simulate.injections import (
    AddDevices,
    ArrivalBursts,
    ClassDrift,
    CoTenantInterference,
    DemandStep,
    DiffuseStalls,
    LaggedAutoscaler,
    LongTaskClumps,
    Migration,
    OnOffDemand,
    PacedDispatcher,
    SpinPowerFloor,
    SyncStallWindows,
)
from coherence_diag.simulate.params import BatchJobs, PoolSpec, Scheduler, TokenMix, Workload
from coherence_diag.simulate.shape import Applies
from coherence_diag.simulate.spec import SimParams


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["baseline", "mode", "pattern"]
    expected_rule: str | None
    description: str
    params: SimParams
    # the structural variants (shape.Shape) the injected condition is physically meaningful in
    applies: Applies = Applies()


BASE_POOLS = (
    PoolSpec("prefill-h100", "prefill", "H100-SXM", 1, devices_per_host=1),
    PoolSpec("prefill-mi300x", "prefill", "MI300X", 1, devices_per_host=1),
    PoolSpec("decode-a100", "decode", "A100-40GB", 24, max_batch=8, virtualized_hosts=1),
    PoolSpec("decode-l40s", "decode", "L40S", 16, max_batch=8),
    PoolSpec("batch-a100", "batch", "A100-40GB", 2, mig_profile="7g.40gb"),  # whole-GPU MIG instance for isolation
)

BASELINE = SimParams(pools=BASE_POOLS, batch_jobs=BatchJobs(pool="batch-a100", mean_interval_s=40.0))


def _pools(**changes: dict[str, object] | None) -> tuple[PoolSpec, ...]:
    """BASE_POOLS with per-pool field changes (keyed by pool name with _ for -); None removes."""
    out = []
    for p in BASE_POOLS:
        key = p.name.replace("-", "_")
        if key in changes and changes[key] is None:
            continue
        out.append(replace(p, **changes[key]) if changes.get(key) else p)  # type: ignore[arg-type]
    return tuple(out)


def _wl(**kw: object) -> Workload:
    return replace(BASELINE.workload, **kw)  # type: ignore[arg-type]


def _scenario(name: str, kind: str, description: str, applies: Applies = Applies(), **overrides: object) -> Scenario:
    params = replace(BASELINE, **overrides)  # type: ignore[arg-type]
    rule = None if kind == "baseline" else name
    return Scenario(name, kind, rule, description, params, applies)  # type: ignore[arg-type]


_ALL = [
    _scenario(
        "healthy",
        "baseline",
        "Disaggregated heterogeneous fleet (H100/MI300X prefill, A100/L40S decode, isolated batch pool) at "
        "moderate load; little queueing, SLOs met, one calm virtualized host.",
    ),
    _scenario(
        "legitimate-queueing",
        "baseline",
        "Healthy plus short arrival bursts (2.5x for 1.5 s): brief prefill queueing that drains within "
        "seconds, does not spread to decode and does not cost SLOs.",
        injections=(ArrivalBursts(n_bursts=8, burst_s=1.5, factor=2.5),),
    ),
    # ---- instability modes
    _scenario(
        "latency-asymmetry-drift",
        "mode",
        "A100 decode devices slow down progressively (to ~2.8x by the end); the scheduler keeps routing "
        "on its nominal model, so realized/predicted time diverges for one class, the tail widens, "
        "completion order inverts and KV transfers into those hosts get noisier.",
        injections=(ClassDrift("A100-40GB", "decode", final_factor=2.8, xfer_sigma=0.6),),
    ),
    _scenario(
        "memory-path-incoherence",
        "mode",
        "Long-context traffic (RAG, ~8k-token prompts) on memory-poor decode devices configured for large "
        "batches: KV cache fills, admission is KV-bound, priority preemptions, per-token time inflates "
        "from KV reads while SMs sit mostly idle.",
        Applies(fleet=("disaggregated",), why="the KV cache fills in a decode pool that receives prefilled requests"),
        pools=(
            PoolSpec("prefill-h100", "prefill", "H100-SXM", 3, devices_per_host=1),
            PoolSpec("prefill-mi300x", "prefill", "MI300X", 1, devices_per_host=1),
            PoolSpec("decode-a100", "decode", "A100-40GB", 4, max_batch=32, virtualized_hosts=1),
            PoolSpec("decode-l40s", "decode", "L40S", 2, max_batch=32),
            PoolSpec("batch-a100", "batch", "A100-40GB", 2),
        ),
        workload=_wl(rate_rps=4.4, mix=(TokenMix(1.0, 8000.0, 0.35, 600.0, 0.4),), tpot_slo_ms=60.0),
    ),
    _scenario(
        "interconnect-capacity-inaccessibility",
        "mode",
        "At mid-trace demand rises and three H100 prefill devices come online in rack-b, whose only path "
        "to decode is a 1.5 GB/s uplink: the uplink saturates, KV transfers dominate latency, the new "
        "devices hold finished KV instead of computing, and throughput does not scale.",
        Applies(fleet=("disaggregated",), why="the condition is KV transfer from prefill to decode over a saturated link"),
        injections=(
            DemandStep(at_frac=0.5, factor=2.0),
            AddDevices("prefill-h100", n_devices=3, at_frac=0.5, rack="rack-b", uplink_gbs=1.5),
        ),
    ),
    _scenario(
        "virtualization-control-distortion",
        "mode",
        "About a third of decode hosts are VMs with bursty co-tenants: steal and co-tenant load spike, "
        "service time on those devices tracks them, and the same work varies far more than on bare metal.",
        injections=(CoTenantInterference(role="decode", host_frac=0.35),),
    ),
    _scenario(
        "migration-reconfiguration-risk",
        "mode",
        "At mid-trace every host migrates from onprem to cloud-a (virtualized, slower noisier network): "
        "same workload, heavier latency tail and slower transfers, no extra timeouts or drops.",
        injections=(Migration(),),
    ),
    # ---- serving patterns
    _scenario(
        "batch-scheduling-conflict",
        "pattern",
        "Batch jobs share the H100 prefill pool, whose scheduler is FIFO and priority-blind: inference "
        "requests queue behind long batch jobs.",
        Applies(batch=("shared-queue",), why="the condition is batch jobs in the inference queue"),
        pools=_pools(prefill_h100={"fifo": True}, batch_a100=None),
        batch_jobs=BatchJobs(pool="prefill-h100", mean_interval_s=60.0, per_wave=1, duration_median_s=40.0, duration_sigma=0.3),
    ),
    _scenario(
        "burst-amplification",
        "pattern",
        "Large arrival spikes (5x for 8 s) overload prefill; clients time out but the server keeps working "
        "on abandoned requests, so the backlog outlives the spike and a wave reaches decode.",
        injections=(ArrivalBursts(n_bursts=3, burst_s=6.0, factor=4.0, start_frac=0.1, end_frac=0.75),),
        scheduler=Scheduler(cancel_on_timeout=False),
        workload=_wl(timeout_factor=2.0, min_timeout_ms=4000.0),
    ),
    _scenario(
        "slot-locking",
        "pattern",
        "Fan-outs of long low-priority generations fill most decode slots and hold them for tens of "
        "seconds (no preemption by priority): priority-0 requests wait for slots (priority inversion).",
        injections=(LongTaskClumps(every_s=60.0, slot_frac=0.95, spread_s=20.0),),
    ),
    _scenario(
        "idle-overload-oscillation",
        "pattern",
        "On/off demand plus an autoscaler that sizes pools from the arrival rate of 10 s ago: pools are "
        "over-provisioned and idle in the low phase and overloaded at the start of the high phase.",
        injections=(OnOffDemand(period_s=40.0, on_frac=0.4, high=1.8, low=0.35), LaggedAutoscaler()),
    ),
    _scenario(
        "energy-latency-mismatch",
        "pattern",
        "The runtime busy-polls (board power pinned near 85% TDP) while periodic synchronization stalls "
        "stretch all kernels 3x for ~5 s: latency swings widely, power does not move.",
        injections=(SpinPowerFloor(0.85), SyncStallWindows(every_s=25.0, length_s=5.0, factor=3.0)),
    ),
    _scenario(
        "retry-amplification",
        "pattern",
        "Tight client deadlines with up to 3 retries and no server-side cancellation at higher load: one "
        "short spike causes timeouts, retries add load, more timeouts follow (self-reinforcing).",
        Applies(clients=("retry",), why="the condition is clients that time out and retry"),
        injections=(ArrivalBursts(n_bursts=1, burst_s=6.0, factor=2.5, start_frac=0.2, end_frac=0.3),),
        scheduler=Scheduler(cancel_on_timeout=False, max_retries=3, retry_backoff_s=0.5),
        workload=_wl(rate_rps=26.0, timeout_factor=1.5, min_timeout_ms=1500.0),
    ),
    _scenario(
        "queue-wait-dominance",
        "pattern",
        "A serialized dispatcher admits work only on passes every ~3 s: requests wait for the next pass "
        "while devices idle, so queue wait is most of end-to-end latency.",
        Applies(dispatch=("tick",), why="the condition is the periodic dispatcher"),
        injections=(PacedDispatcher(tick_s=2.0),),
    ),
    _scenario(
        "sla-degradation-without-shortage",
        "pattern",
        "Lower load (clear headroom) but many small unrelated delays in every layer (dispatch RPC hiccups, "
        "KV-transfer retransmission timeouts, host stalls between decode steps): SLO attainment drops "
        "with no queue build-up and no single dominant cause.",
        workload=_wl(rate_rps=10.0),
        injections=(DiffuseStalls(),),
    ),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}
