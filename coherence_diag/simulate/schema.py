"""Column set and dtypes of the traces the simulator writes (a subset of trace-format v1)."""

from __future__ import annotations

import polars as pl

from coherence_diag import schema as trace_schema

TS_DTYPE = pl.Datetime("ns", "UTC")

# The declared trace schema is the single source of column names, types, layers and events;
# the simulator writes timestamps as Parquet timestamps rather than the internal int64 ns.
LAYERS = trace_schema.LAYERS
EVENTS = trace_schema.EVENTS

# The columns each layer's rows may carry; per-layer files hold exactly these (minus `layer`).
LAYER_COLUMNS: dict[str, tuple[str, ...]] = {
    "scheduler": (
        "ts", "event", "request_id", "attempt", "pool", "device", "env", "priority", "workload_class",
        "slo_ms", "ttft_slo_ms", "predicted_ms", "prompt_tokens", "output_tokens",
    ),
    "queue": ("ts", "event", "queue", "pool", "depth", "env"),
    "gpu": (
        "ts", "event", "request_id", "device", "host", "pool", "env", "phase", "dur_ms", "batch_size", "tokens",
        "gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "power_w", "accelerator", "mig_profile", "virtualized",
    ),
    "network": (
        "ts", "event", "request_id", "src_device", "dst_device", "dur_ms", "bytes", "kind", "link",
        "link_util", "retransmits", "env",
    ),
    "hypervisor": ("ts", "event", "host", "device", "env", "steal_frac", "cotenant_util", "vgpu_wait_ms"),
}  # fmt: skip

# The columns the simulator writes, in the declared schema's order and types: those its layers
# carry (columns the schema gained for other sources, such as `wait_ms`, are not simulated).
_WRITTEN = {"layer"}.union(*LAYER_COLUMNS.values())
COLUMNS: dict[str, pl.DataType] = {
    name: TS_DTYPE if name == "ts" else trace_schema.dtype_of(name) for name in trace_schema.COLUMNS if name in _WRITTEN
}

FRACTION_COLUMNS = ("gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "link_util", "steal_frac", "cotenant_util")
