"""`simulate()`: scenario name in, one trace-format v1 table out."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.simulate import engine, telemetry
from coherence_diag.simulate.arrivals import ArrivalTable
from coherence_diag.simulate.assemble import assemble
from coherence_diag.simulate.naming import NAMINGS, plain_names, random_names
from coherence_diag.simulate.build import build_plan
from coherence_diag.simulate.plan import rng_for
from coherence_diag.simulate.scenarios import SCENARIOS
from coherence_diag.simulate.shape import Shape
from coherence_diag.simulate.variants import mask_telemetry, shaped_params

DEFAULT_TIME_ORIGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)
MAX_SCALE = 10_000.0


def simulate(
    scenario: str,
    seed: int = 0,
    *,
    scale: float = 1.0,
    duration_s: float | None = None,
    arrivals: Path | ArrivalTable | None = None,
    time_origin: datetime | None = None,
    naming: str = "plain",
    shape: Shape | None = None,
) -> pl.DataFrame:
    """Simulate `scenario` and return all layers as one table (see trace-format v1).

    scale >= 1 multiplies the arrival rate and the fleet size; scale < 1 keeps both and
    shortens the arrival window instead (single-device pools cannot shrink). With
    `arrivals`, the replay is sped up by `scale` and the fleet sized to the replayed demand.
    duration_s is the length of the arrival window (the trace runs on until every request
    has finished); with `arrivals` it truncates the replay. `shape` runs the scenario on a
    structural variant (`shape.Shape`: fleet shape, clients, dispatch, batch placement,
    telemetry present, length; see `variants.py`); its `length_s` is the duration and cannot be
    given together with duration_s. The result depends only on the arguments.
    """
    spec = SCENARIOS.get(scenario)
    if spec is None:
        raise InputError(f"unknown scenario {scenario!r}; expected one of: {', '.join(SCENARIOS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"invalid seed {seed!r}; expected a non-negative integer")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 < scale <= MAX_SCALE:
        raise InputError(f"invalid scale {scale!r}; expected a number in (0, {MAX_SCALE:g}]")
    if duration_s is not None and (not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s <= 0):
        raise InputError(f"invalid duration_s {duration_s!r}; expected a positive number of seconds")
    if naming not in NAMINGS:
        raise InputError(f"invalid naming {naming!r}; expected one of: {', '.join(NAMINGS)}")
    origin = DEFAULT_TIME_ORIGIN if time_origin is None else time_origin
    if not isinstance(origin, datetime):
        raise InputError(f"invalid time_origin {time_origin!r}; expected a datetime")
    if origin.tzinfo is None:  # naive = UTC, as in the trace format
        origin = origin.replace(tzinfo=timezone.utc)
    origin_ns = _epoch_ns(origin)
    params = spec.params
    if shape is not None:
        if not isinstance(shape, Shape):
            raise InputError(f"invalid shape {shape!r}; expected a coherence_diag.simulate.Shape")
        if shape.length_s is not None:
            if duration_s is not None:
                raise InputError("duration_s and shape.length_s both set; expected at most one trace length")
            duration_s = shape.length_s
        params = shaped_params(scenario, shape)

    replay = arrivals if arrivals is None or isinstance(arrivals, ArrivalTable) else Path(arrivals)
    plan = build_plan(params, seed, float(scale), duration_s, replay)
    logs = engine.run(plan)
    n_bins = max(1, int(math.ceil(logs.end_s)) + 1)
    rng = rng_for(seed, "telemetry")
    gpu, busy = telemetry.gpu_samples(plan, logs, n_bins, rng)
    queue = telemetry.queue_samples(plan, logs, n_bins)
    link = telemetry.link_samples(plan, logs, n_bins, rng)
    hyper = telemetry.hypervisor_samples(plan, busy, n_bins, rng)
    del busy
    fleet = plan.fleet
    names = plain_names([p.name for p in fleet.pools], fleet.host_name, fleet.dev_name, fleet.link_name, plan.env_names)
    if naming == "random":
        names = random_names(names, rng_for(seed, "naming"))
    df = assemble(plan, logs, names, origin_ns, gpu, queue, link, hyper)
    return df if shape is None or not shape.telemetry.absent else mask_telemetry(df, shape.telemetry)


def _epoch_ns(dt: datetime) -> int:
    delta = dt.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
