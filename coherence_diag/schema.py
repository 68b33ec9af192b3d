"""The declared trace schema (trace-format v1 and this tool's superset of it).

This module is data only: which layers, events and columns exist, their types, units and
constraints. `validate.py` is the code that checks a trace against it, and `docs/trace-schema.md`
is generated from it (a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

Kind = Literal["timestamp", "string", "int", "count", "float", "duration_ms", "fraction", "bool"]

# Polars dtype each kind is normalised to on ingest. Timestamps become Int64 nanoseconds since
# the Unix epoch (UTC): integer arithmetic keeps durations exact and joins cheap.
DTYPE: dict[str, pl.DataType] = {
    "timestamp": pl.Int64(),
    "string": pl.String(),
    "int": pl.Int64(),
    "count": pl.Int64(),
    "float": pl.Float64(),
    "duration_ms": pl.Float64(),
    "fraction": pl.Float64(),
    "bool": pl.Boolean(),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    meaning: str


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in [
        Column("ts", "timestamp", "event time; for spans the span start"),
        Column("layer", "string", "telemetry layer"),
        Column("event", "string", "event type within the layer"),
        Column("host", "string", "machine name"),
        Column("device", "string", "accelerator id, unique within the trace"),
        Column("env", "string", "environment label"),
        Column("request_id", "string", "request or batch job the row belongs to"),
        # scheduler
        Column("pool", "string", "serving pool"),
        Column("priority", "int", "0 = real-time (highest); larger = lower priority"),
        Column("workload_class", "string", "`inference` or `batch`"),
        Column("slo_ms", "duration_ms", "end-to-end latency objective"),
        Column("ttft_slo_ms", "duration_ms", "time-to-first-token objective"),
        Column("predicted_ms", "duration_ms", "service time the scheduler expected at dispatch"),
        Column("prompt_tokens", "count", "prompt length in tokens"),
        Column("output_tokens", "count", "generated tokens"),
        Column("attempt", "count", "0 for the first try, 1.. for retries"),
        # queue
        Column("queue", "string", "queue name"),
        Column("depth", "count", "requests waiting"),
        Column("wait_ms", "duration_ms", "mean time the requests of the sample interval spent queuing"),
        # gpu
        Column("dur_ms", "duration_ms", "span duration"),
        Column("phase", "string", "`prefill`, `decode`, `batch_job` or `other`"),
        Column("batch_size", "count", "requests in the executed batch"),
        Column("tokens", "count", "tokens processed by the span"),
        Column("gpu_util", "fraction", "fraction of time any kernel ran (DCGM_FI_DEV_GPU_UTIL)"),
        Column("sm_active", "fraction", "fraction of SM cycles active (DCGM_FI_PROF_SM_ACTIVE)"),
        Column("mem_bw_util", "fraction", "memory-bandwidth cycles active (DCGM_FI_PROF_DRAM_ACTIVE)"),
        Column("kv_cache_util", "fraction", "fraction of KV-cache blocks in use"),
        Column("power_w", "float", "board power in watts (DCGM_FI_DEV_POWER_USAGE)"),
        Column("mem_used_bytes", "count", "device memory in use, bytes (DCGM_FI_DEV_FB_USED, which is MiB, x 2^20)"),
        Column("accelerator", "string", "accelerator model name"),
        Column("mig_profile", "string", "MIG profile"),
        Column("virtualized", "bool", "device is behind a hypervisor / vGPU"),
        # network
        Column("src_device", "string", "transfer source device"),
        Column("dst_device", "string", "transfer destination device"),
        Column("bytes", "count", "bytes transferred"),
        Column("kind", "string", "`kv_transfer`, `collective` or `other`"),
        Column("link", "string", "link name"),
        Column("link_util", "fraction", "link utilization"),
        Column("retransmits", "count", "retransmitted packets in the sample interval"),
        # hypervisor
        Column("steal_frac", "fraction", "fraction of time the guest was runnable but not running"),
        Column("cotenant_util", "fraction", "activity of other tenants on the same resource"),
        Column("vgpu_wait_ms", "duration_ms", "time waiting for the vGPU scheduler"),
    ]
}

LAYERS: tuple[str, ...] = ("scheduler", "queue", "gpu", "network", "hypervisor")

EVENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("arrive", "dispatch", "first_token", "complete", "timeout", "drop", "retry", "preempt"),
    "queue": ("sample",),
    "gpu": ("exec", "sample", "device_info"),
    "network": ("transfer", "sample"),
    "hypervisor": ("sample", "migrate"),
}

# A required value: one column, or alternatives of which at least one must hold a value (a
# hypervisor `migrate` row names the host or the device that moved).
Required = str | tuple[str, ...]

# Columns a row of (layer, event) must carry a value in; event "*" means every event of the
# layer. A trace whose layer has rows of that event but lacks the column (every alternative)
# entirely is unusable (exit 2); individual rows with a null there (in every alternative) are set
# aside as `missing_value:<the first alternative>`.
REQUIRED_VALUES: dict[tuple[str, str], tuple[Required, ...]] = {
    ("scheduler", "*"): ("request_id",),
    ("queue", "sample"): ("queue", ("depth", "wait_ms")),
    ("gpu", "exec"): ("device", "dur_ms"),
    ("gpu", "sample"): ("device",),
    ("gpu", "device_info"): ("device",),
    ("network", "transfer"): ("dur_ms",),
    ("network", "sample"): ("link",),
    ("hypervisor", "sample"): ("host",),
    ("hypervisor", "migrate"): ("env", ("host", "device")),
}


def alternatives(required: Required) -> tuple[str, ...]:
    """The columns that can satisfy a required value (one for a plain column)."""
    return (required,) if isinstance(required, str) else required


def describe_required(required: Required) -> str:
    """`a` or `a` or `b`, for messages and docs."""
    return " or ".join(f"`{c}`" for c in alternatives(required))

# Columns every row needs before it can be placed at all.
CORE_COLUMNS: tuple[str, ...] = ("ts", "layer", "event")

# Which columns each layer uses: a per-layer read only decodes these (keeps memory bounded).
LAYER_COLUMNS: dict[str, tuple[str, ...]] = {
    "scheduler": (
        "ts", "event", "request_id", "host", "device", "env", "pool", "priority", "workload_class",
        "slo_ms", "ttft_slo_ms", "predicted_ms", "prompt_tokens", "output_tokens", "attempt",
    ),
    "queue": ("ts", "event", "queue", "pool", "depth", "wait_ms", "host", "env"),
    "gpu": (
        "ts", "event", "request_id", "device", "host", "env", "pool", "dur_ms", "phase", "batch_size",
        "tokens", "gpu_util", "sm_active", "mem_bw_util", "kv_cache_util", "power_w", "mem_used_bytes", "accelerator",
        "mig_profile", "virtualized",
    ),
    "network": (
        "ts", "event", "request_id", "host", "env", "src_device", "dst_device", "dur_ms", "bytes",
        "kind", "link", "link_util", "retransmits",
    ),
    "hypervisor": ("ts", "event", "host", "device", "env", "steal_frac", "cotenant_util", "vgpu_wait_ms"),
}

# Columns that identify a row well enough to find duplicate candidates cheaply: rows that
# differ here cannot be duplicates. Candidates are then compared on every column.
IDENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "scheduler": ("ts", "event", "request_id", "attempt", "device"),
    "queue": ("ts", "queue", "depth", "wait_ms"),
    "gpu": ("ts", "event", "device", "request_id", "dur_ms", "gpu_util"),
    "network": ("ts", "event", "request_id", "link", "dur_ms", "link_util"),
    "hypervisor": ("ts", "host", "device", "steal_frac"),
}

# Enumerated string values. Unknown values of these are set aside with reason `bad_value`
# (except `event`, which the trace format says to set aside as a warning).
ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "workload_class": ("inference", "batch"),
    "phase": ("prefill", "decode", "batch_job", "other"),
    "kind": ("kv_transfer", "collective", "other"),
}

FRACTION_COLUMNS = tuple(c.name for c in COLUMNS.values() if c.kind == "fraction")
DURATION_COLUMNS = tuple(c.name for c in COLUMNS.values() if c.kind == "duration_ms")
COUNT_COLUMNS = tuple(c.name for c in COLUMNS.values() if c.kind == "count")


@dataclass(frozen=True)
class Bound:
    """The physically meaningful range of a numeric column, beyond what its kind requires.

    A value outside it is not a measurement of one request, span, transfer or sample (and would
    overflow the analysis' integer nanosecond and fixed-point arithmetic): its row is set aside
    with `reason`. Columns sharing a reason share the bound and the wording.
    """

    reason: str
    high: float
    low: float | None  # None: the kind's own lower bound (>= 0 for durations and counts)
    problem: str  # what is wrong with a value outside, for messages
    expected: str  # what a value must be, for messages and docs/trace-schema.md


MAX_DURATION_MS = 7 * 24 * 3600 * 1000  # 604,800,000 ms: a week is not the span of one request
MAX_TOKENS = 2**31  # per request or span; no model has a context anywhere near it
MAX_BYTES = 2**50  # 1 PiB in one transfer
MAX_POWER_W = 100_000.0  # 100 kW: fifty times the board power of any accelerator

_DURATION = Bound(
    "duration_out_of_range", MAX_DURATION_MS, None,
    "duration longer than 7 days, not the span, wait or objective of one request",
    f"at most {MAX_DURATION_MS:,} ms",
)
_TOKENS = Bound(
    "tokens_out_of_range", MAX_TOKENS, None,
    "token count above 2^31, not the tokens of one request or span",
    f"at most {MAX_TOKENS:,} tokens",
)
_BYTES = Bound(
    "bytes_out_of_range", MAX_BYTES, None,
    "byte count above 2^50 (1 PiB), not one transfer",
    f"at most {MAX_BYTES:,} bytes",
)
_POWER = Bound(
    "power_out_of_range", MAX_POWER_W, 0.0,
    "board power negative or above 100 kW, not one accelerator board",
    f"0 to {MAX_POWER_W:,.0f} W",
)

# Columns with a physical bound (declared here, checked by validate.py, listed in the docs).
BOUNDS: dict[str, Bound] = {
    **{c: _DURATION for c in DURATION_COLUMNS},
    "prompt_tokens": _TOKENS,
    "output_tokens": _TOKENS,
    "tokens": _TOKENS,
    "bytes": _BYTES,
    "mem_used_bytes": _BYTES,
    "power_w": _POWER,
}


def dtype_of(column: str) -> pl.DataType:
    return DTYPE[COLUMNS[column].kind]


def describe_kind(kind: Kind) -> str:
    """Human description of what a column of this kind must hold (used in error messages)."""
    return {
        "timestamp": "a timestamp (Parquet timestamp, int64 ns since epoch, or ISO-8601 text)",
        "string": "text",
        "int": "an integer",
        "count": "a non-negative integer",
        "float": "a number",
        "duration_ms": "a finite, non-negative number of milliseconds",
        "fraction": "a number in [0, 1]",
        "bool": "true/false",
    }[kind]
