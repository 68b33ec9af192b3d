"""Discrete-event simulator of a heterogeneous LLM serving fleet that writes trace-format v1.

    from coherence_diag.simulate import SCENARIOS, simulate, write_trace
    df = simulate("memory-path-incoherence", seed=1)
    write_trace(df, Path("trace.parquet"))
    df = simulate("slot-locking", seed=1, shape=Shape(fleet="colocated", dispatch="tick", length_s=600))

Each scenario is the healthy baseline plus one injected physical condition (`scenarios.py`,
`injections.py`); the rows are produced by the simulated physics, not painted on. A `Shape`
runs a scenario on a structural variant of the fleet (`shape.py`, `variants.py`): fleet shape,
clients, dispatch, batch placement, telemetry present, length.

What the traces promise beyond trace-format v1:
- every attempt of a request ends in exactly one of complete/timeout/drop; a request has at
  most one `complete` (a timed-out attempt may be followed by a `retry` attempt that completes);
- `first_token` is the first decode step on the decode device (after the KV transfer, in
  disaggregated fleets);
- `predicted_ms` on `dispatch` is the scheduler's nominal model (datasheet roofline, no KV
  traffic, no slowdowns); the difference to the exec span is the injected/realized physics; a
  unified device (colocated fleets) is dispatched to once, for prefill and decode together;
- exec spans without `request_id` (phase `batch_job`) are an external batch system's holds
  (`Shape(batch="external-holds")`); they have no scheduler rows;
- `env` is set on every row; rows come grouped by kind, each group sorted by `ts`;
- names are descriptive with naming="plain" and seeded random tokens with naming="random".
"""

from __future__ import annotations

from coherence_diag.simulate.api import DEFAULT_TIME_ORIGIN, simulate
from coherence_diag.simulate.scenarios import SCENARIOS, Scenario
from coherence_diag.simulate.shape import Applies, Shape, Telemetry
from coherence_diag.simulate.writer import write_trace

__all__ = ["DEFAULT_TIME_ORIGIN", "SCENARIOS", "Applies", "Scenario", "Shape", "Telemetry", "simulate", "write_trace"]
