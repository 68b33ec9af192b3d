"""Apply a structural variant (`shape.Shape`) to a catalogued scenario.

Each knob level is realised physically, in the parameters the simulation runs on, never by
editing rows afterwards (the telemetry mask is the one exception: it only removes what a capture
would not have recorded):

- fleet `colocated`: the decode pools become ONE pool of unified devices (same classes and slots
  per device, `UNIFIED_FRAC` of the devices); each device prefills and decodes its own requests,
  a prefill pausing the device's running decodes; the prefill pools, their NICs and every KV
  transfer disappear.
  `pools`: one independent unified pool per former decode pool (one per accelerator class),
  behind a least-outstanding-requests router. Batch jobs that shared a queue go into the
  (first) unified pool's queue; a batch job needs whole devices (a gang of `SHARED_JOB_FRAC` of the
  pool when it took a whole inference pool before), which are drained for it.
- clients `no-timeout`: no deadline (no timeout rows, hence no retries); `timeout`: deadlines,
  no retry; `retry`: deadlines and up to `RETRIES` retries (or the scenario's own number).
- dispatch `tick`: a periodic dispatcher that places queued work on devices only at its passes
  (every `TICK.tick_s` on a fixed grid); `affinity`: routing prefers a per-request home subset
  of devices and spills over when it is full.
- batch `external-holds`: no batch jobs through the serving scheduler (and no batch pool); an
  external batch system holds serving devices for minutes (`injections.ExternalHolds`).
- telemetry: `mask_telemetry` drops absent columns, and absent layers' rows and columns.
- length_s: the arrival window (injected conditions are placed in fractions of it).

A knob left at None, or set to the scenario's own level, changes nothing: `Shape()` gives the
catalogued scenario byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import replace

import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.simulate.injections import AffinityRouting, ExternalHolds, PacedDispatcher
from coherence_diag.simulate.params import PoolSpec
from coherence_diag.simulate.scenarios import SCENARIOS, Scenario
from coherence_diag.simulate.schema import LAYER_COLUMNS
from coherence_diag.simulate.shape import KNOB_LEVELS, Shape, Telemetry
from coherence_diag.simulate.spec import SimParams

RETRIES = 2  # retries of clients that retry, unless the scenario sets its own
TICK = PacedDispatcher(tick_s=0.25, jitter_s=0.005, placement=True)
AFFINITY = AffinityRouting(groups=4, skew=1.0)
HOLDS = ExternalHolds()
SHARED_JOB_FRAC = 0.4  # a batch job that took a whole prefill pool takes this share of a unified pool
# A unified device does a decode device's work plus its requests' prefills; the decode pools have
# far more slots than the load needs (prefill is their bottleneck), so the unified pool keeps
# this share of them: about 40% of its slots busy in the healthy baseline, where a burst or a
# slow-down reaches the knee of the pool's capacity as it does the prefill pools' in
# disaggregated serving.
UNIFIED_FRAC = 0.33

COLOCATED_POOL = "serve"
MASKABLE_COLUMNS = ("predicted_ms", "sm_active", "kv_cache_util")
MASKABLE_LAYERS = ("network", "hypervisor")


def native_levels(sc: Scenario) -> dict[str, str]:
    """The level of each structural knob the catalogued scenario runs at."""
    p = sc.params
    if p.scheduler.max_retries > 0:
        clients = "retry"
    else:
        clients = "no-timeout" if math.isinf(p.workload.timeout_factor) else "timeout"
    unified = {s.name for s in p.pools if s.role == "unified"}
    return {
        "fleet": "disaggregated" if not unified else ("colocated" if len(unified) == 1 else "pools"),
        "clients": clients,
        "dispatch": "tick" if any(isinstance(i, PacedDispatcher) for i in p.injections) else "continuous",
        "batch": "external-holds" if any(isinstance(i, ExternalHolds) for i in p.injections) else "shared-queue",
    }


def refusal(scenario: str, shape: Shape) -> str | None:
    """None when `shape` is meaningful for `scenario`, else why not."""
    return _scenario(scenario).applies.refusal(shape)


def shaped_params(scenario: str, shape: Shape) -> SimParams:
    """The scenario's parameters with every set knob of `shape` applied."""
    sc = _scenario(scenario)
    why = sc.applies.refusal(shape)
    if why is not None:
        allowed = "; ".join(f"{k}: {', '.join(sc.applies.levels(k))}" for k in KNOB_LEVELS)
        raise InputError(f"scenario {scenario!r} does not apply with {why}; expected levels ({allowed})")
    own = native_levels(sc)
    params = sc.params

    def wants(knob: str) -> str | None:
        level = shape.level(knob)
        return level if level is not None and level != own[knob] else None

    if wants("batch") == "external-holds":
        params = _external_holds(params)
    fleet = wants("fleet")
    if fleet in ("colocated", "pools"):
        params = _unified(params, separate=fleet == "pools")
    clients = wants("clients")
    if clients is not None:
        params = _clients(params, clients)
    dispatch = wants("dispatch")
    if dispatch is not None:
        params = _dispatch(params, dispatch)
    return params


def _scenario(name: str) -> Scenario:
    sc = SCENARIOS.get(name)
    if sc is None:
        raise InputError(f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}")
    return sc


def _external_holds(params: SimParams) -> SimParams:
    pools = tuple(p for p in params.pools if p.role != "batch")
    return replace(params, pools=pools, batch_jobs=None, injections=(*params.injections, HOLDS))


def _unified(params: SimParams, *, separate: bool) -> SimParams:
    """Decode pools -> unified pool(s); prefill pools and the batch pool are absorbed."""
    decode = [p for p in params.pools if p.role == "decode"]
    if not decode:
        raise InputError("a colocated or pools fleet needs decode pools to turn into unified pools")
    by_name = {p.name: p for p in params.pools}
    jobs = params.batch_jobs
    job_source = by_name.get(jobs.pool) if jobs is not None else None
    fifo = job_source is not None and job_source.role != "batch" and job_source.fifo
    unified: list[PoolSpec] = []
    for p in decode:
        name = p.name.replace("decode", "serve") if separate else COLOCATED_POOL
        n = max(2, round(UNIFIED_FRAC * p.n_devices))
        unified.append(replace(p, name=name, role="unified", n_devices=n, fifo=fifo and (not separate or p is decode[0])))
    if jobs is not None:
        target = unified[0].name
        gang = jobs.gang
        if job_source is not None and job_source.role != "batch":
            # each job took a whole inference pool; here it is gang-scheduled on a share of one
            n_target = sum(u.n_devices for u in unified if u.name == target)
            gang = max(gang, round(SHARED_JOB_FRAC * n_target))
        jobs = replace(jobs, pool=target, gang=gang)
    return replace(params, pools=tuple(unified), batch_jobs=jobs)


def _clients(params: SimParams, level: str) -> SimParams:
    wl, sch = params.workload, params.scheduler
    if level == "no-timeout":
        return replace(params, workload=replace(wl, timeout_factor=math.inf, min_timeout_ms=math.inf), scheduler=replace(sch, max_retries=0))
    if level == "timeout":
        return replace(params, scheduler=replace(sch, max_retries=0))
    return replace(params, scheduler=replace(sch, max_retries=sch.max_retries or RETRIES))


def _dispatch(params: SimParams, level: str) -> SimParams:
    kept = tuple(i for i in params.injections if not isinstance(i, PacedDispatcher))
    if level == "tick":
        return replace(params, injections=(*kept, TICK))
    if level == "affinity":
        return replace(params, injections=(*kept, AFFINITY))
    return replace(params, injections=kept)


# --- telemetry present or absent -------------------------------------------------------------

_OTHER_LAYERS_COLUMNS = {
    layer: {c for other, cols in LAYER_COLUMNS.items() if other != layer for c in cols} for layer in LAYER_COLUMNS
}
LAYER_ONLY_COLUMNS: dict[str, tuple[str, ...]] = {
    layer: tuple(c for c in cols if c not in _OTHER_LAYERS_COLUMNS[layer]) for layer, cols in LAYER_COLUMNS.items()
}


def mask_telemetry(df: pl.DataFrame, telemetry: Telemetry) -> pl.DataFrame:
    """The trace as a capture without the absent telemetry would have recorded it: absent
    columns dropped; absent layers' rows dropped, with the columns only they carry."""
    absent = set(telemetry.absent)
    layers = [layer for layer in MASKABLE_LAYERS if layer in absent]
    cols = [c for c in MASKABLE_COLUMNS if c in absent]
    if layers:
        df = df.filter(~pl.col("layer").is_in(layers))
        cols += [c for layer in layers for c in LAYER_ONLY_COLUMNS[layer]]
    return df.drop([c for c in cols if c in df.columns])
