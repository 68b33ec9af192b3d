"""Small synthetic traces for tests, built directly (not by the simulator) so that tests can
know every number that went in and check the tool's output against an independent computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
from hypothesis import strategies as st

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
MS = 1_000_000

DEVICES = [  # device, host, pool, accelerator, virtualized
    ("gpu-0", "host-a", "prefill", "H100-SXM", False),
    ("gpu-1", "host-a", "prefill", "H100-SXM", False),
    ("gpu-2", "host-b", "decode", "L40S", True),
    ("gpu-3", "host-b", "decode", "L40S", True),
]


@dataclass
class TraceSpec:
    n_requests: int = 60
    seed: int = 0
    rate_per_s: float = 20.0
    timeout_frac: float = 0.05
    drop_frac: float = 0.02
    retry_frac: float = 0.05
    batch_jobs: int = 2
    slo_ms: float | None = 400.0
    gpu: bool = True
    network: bool = True
    queue: bool = True
    hypervisor: bool = True
    env: str | None = "onprem"


def make_trace(spec: TraceSpec | None = None, **overrides: object) -> pl.DataFrame:
    """One table with a `layer` column; `ts` as Datetime(ns, UTC). Deterministic per spec."""
    spec = spec or TraceSpec()
    for k, v in overrides.items():
        setattr(spec, k, v)
    rng = np.random.default_rng(spec.seed)
    rows: list[dict] = []
    arrivals = T0_NS + np.cumsum(rng.exponential(1e9 / spec.rate_per_s, spec.n_requests)).astype(np.int64)
    last_ts = int(arrivals[-1])
    for i, arrive in enumerate(arrivals.tolist()):
        rid = f"req-{i:05d}"
        outcome = rng.choice(
            ["completed", "timeout", "dropped"],
            p=[1 - spec.timeout_frac - spec.drop_frac, spec.timeout_frac, spec.drop_frac],
        )
        prompt = int(rng.integers(50, 2000))
        output = int(rng.integers(5, 300))
        base = {"request_id": rid, "env": spec.env}
        rows.append({**base, "layer": "scheduler", "event": "arrive", "ts": arrive, "attempt": 0, "priority": int(rng.integers(0, 3)),
                     "workload_class": "inference", "slo_ms": spec.slo_ms, "prompt_tokens": prompt, "pool": "prefill"})
        start = arrive
        attempt = 0
        if rng.random() < spec.retry_frac:
            t_out = start + int(rng.uniform(50, 150) * MS)
            rows.append({**base, "layer": "scheduler", "event": "timeout", "ts": t_out, "attempt": 0})
            start = t_out + 5 * MS
            attempt = 1
            rows.append({**base, "layer": "scheduler", "event": "retry", "ts": start, "attempt": 1})
        wait = int(rng.gamma(2.0, 20.0) * MS)
        if outcome == "dropped":
            rows.append({**base, "layer": "scheduler", "event": "drop", "ts": start + wait, "attempt": attempt})
            continue
        d_pref = DEVICES[int(rng.integers(0, 2))]
        d_dec = DEVICES[int(rng.integers(2, 4))]
        dispatch = start + wait
        rows.append({**base, "layer": "scheduler", "event": "dispatch", "ts": dispatch, "attempt": attempt, "pool": "prefill",
                     "device": d_pref[0], "predicted_ms": prompt / 20.0})
        prefill_ms = prompt / 20.0 * float(rng.uniform(0.8, 1.3))
        rows.append({"layer": "gpu", "event": "exec", "ts": dispatch, "request_id": rid, "device": d_pref[0],
                     "dur_ms": prefill_ms, "phase": "prefill", "tokens": prompt, "batch_size": 1})
        if outcome == "timeout":
            rows.append({**base, "layer": "scheduler", "event": "timeout", "ts": dispatch + int(prefill_ms * MS) + 1, "attempt": attempt})
            continue
        t = dispatch + int(prefill_ms * MS)
        kv_ms = float(rng.uniform(2, 15))
        if spec.network:
            rows.append({"layer": "network", "event": "transfer", "ts": t, "request_id": rid, "src_device": d_pref[0],
                         "dst_device": d_dec[0], "dur_ms": kv_ms, "bytes": prompt * 160_000, "kind": "kv_transfer", "link": "link-ab"})
        t += int(kv_ms * MS)
        decode_wait = int(rng.uniform(0, 10) * MS)
        t += decode_wait
        rows.append({**base, "layer": "scheduler", "event": "dispatch", "ts": t, "attempt": attempt, "pool": "decode", "device": d_dec[0],
                     "predicted_ms": output * 1.0})
        rows.append({**base, "layer": "scheduler", "event": "first_token", "ts": t + 2 * MS, "attempt": attempt})
        decode_ms = output * float(rng.uniform(0.8, 1.5))
        rows.append({"layer": "gpu", "event": "exec", "ts": t, "request_id": rid, "device": d_dec[0], "dur_ms": decode_ms,
                     "phase": "decode", "tokens": output, "batch_size": 4})
        end = t + int(decode_ms * MS) + 1 * MS
        rows.append({**base, "layer": "scheduler", "event": "complete", "ts": end, "attempt": attempt, "output_tokens": output})
        last_ts = max(last_ts, end)

    for j in range(spec.batch_jobs):
        jid = f"job-{j:03d}"
        start = T0_NS + int(rng.uniform(0, 1) * (last_ts - T0_NS))
        dur = float(rng.uniform(200, 800))
        rows.append({"layer": "scheduler", "event": "arrive", "ts": start, "request_id": jid, "workload_class": "batch", "priority": 5,
                     "attempt": 0, "env": spec.env})
        rows.append({"layer": "scheduler", "event": "dispatch", "ts": start + MS, "request_id": jid, "pool": "prefill", "device": "gpu-1",
                     "attempt": 0})
        rows.append({"layer": "gpu", "event": "exec", "ts": start + MS, "request_id": jid, "device": "gpu-1", "dur_ms": dur, "phase": "batch_job"})
        rows.append({"layer": "scheduler", "event": "complete", "ts": start + MS + int(dur * MS), "request_id": jid, "attempt": 0})

    if spec.gpu:
        for dev, host, pool, acc, virt in DEVICES:
            rows.append({"layer": "gpu", "event": "device_info", "ts": T0_NS, "device": dev, "host": host, "pool": pool,
                         "accelerator": acc, "virtualized": virt, "env": spec.env})
    seconds = int((last_ts - T0_NS) // 1_000_000_000) + 1
    for s in range(seconds):
        ts = T0_NS + s * 1_000_000_000
        if spec.gpu:
            for dev, *_ in DEVICES:
                rows.append({"layer": "gpu", "event": "sample", "ts": ts, "device": dev, "gpu_util": float(rng.uniform(0.3, 0.9)),
                             "sm_active": float(rng.uniform(0.2, 0.7)), "mem_bw_util": float(rng.uniform(0.2, 0.8)),
                             "kv_cache_util": float(rng.uniform(0.1, 0.6)), "power_w": float(rng.uniform(200, 600))})
        if spec.queue:
            rows.append({"layer": "queue", "event": "sample", "ts": ts, "queue": "q-prefill", "pool": "prefill", "depth": int(rng.integers(0, 5))})
        if spec.network:
            rows.append({"layer": "network", "event": "sample", "ts": ts, "link": "link-ab", "link_util": float(rng.uniform(0, 0.6)),
                         "retransmits": int(rng.integers(0, 3))})
        if spec.hypervisor:
            rows.append({"layer": "hypervisor", "event": "sample", "ts": ts, "host": "host-b", "steal_frac": float(rng.uniform(0, 0.1)),
                         "cotenant_util": float(rng.uniform(0, 0.5))})
    frame = pl.DataFrame(rows, schema=_SCHEMA)
    keep = [c for c in frame.columns if frame[c].null_count() < frame.height or c in ("ts", "layer", "event")]
    frame = frame.select(keep)
    if spec.slo_ms is None and "slo_ms" in frame.columns:
        frame = frame.drop("slo_ms")
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))


_SCHEMA = {
    "ts": pl.Int64, "layer": pl.String, "event": pl.String, "request_id": pl.String, "env": pl.String, "host": pl.String,
    "device": pl.String, "pool": pl.String, "priority": pl.Int64, "workload_class": pl.String, "slo_ms": pl.Float64,
    "predicted_ms": pl.Float64, "prompt_tokens": pl.Int64, "output_tokens": pl.Int64, "attempt": pl.Int64,
    "queue": pl.String, "depth": pl.Int64, "dur_ms": pl.Float64, "phase": pl.String, "batch_size": pl.Int64,
    "tokens": pl.Int64, "gpu_util": pl.Float64, "sm_active": pl.Float64, "mem_bw_util": pl.Float64,
    "kv_cache_util": pl.Float64, "power_w": pl.Float64, "accelerator": pl.String, "virtualized": pl.Boolean,
    "src_device": pl.String, "dst_device": pl.String, "bytes": pl.Int64, "kind": pl.String, "link": pl.String,
    "link_util": pl.Float64, "retransmits": pl.Int64, "steal_frac": pl.Float64, "cotenant_util": pl.Float64,
}


def write(frame: pl.DataFrame, path, fmt: str | None = None) -> None:
    """Write as parquet or csv (by suffix). CSV timestamps become ISO-8601 with Z."""
    fmt = fmt or str(path).rsplit(".", 1)[-1]
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.9fZ")).write_csv(path)


# Hypothesis: TraceSpecs over the generator's range (tests of properties that hold on any trace).
TRACE_SPECS = st.builds(
    TraceSpec,
    n_requests=st.integers(5, 80),
    seed=st.integers(0, 10_000),
    rate_per_s=st.floats(2.0, 100.0),
    timeout_frac=st.floats(0.0, 0.3),
    drop_frac=st.floats(0.0, 0.2),
    retry_frac=st.floats(0.0, 0.4),
    batch_jobs=st.integers(0, 3),
    slo_ms=st.one_of(st.none(), st.floats(50.0, 2000.0)),
    gpu=st.booleans(),
    network=st.booleans(),
    queue=st.booleans(),
    hypervisor=st.booleans(),
)
