"""Build a FeatureContext from hand-written rows through the real pipeline (no rule files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coherence_diag import features, ingest, metrics, paths, validate

MS = 1_000_000
S = 1_000_000_000
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def context(tmp_path: Path, rows: list[dict], window_s: float = 1.0) -> features.FeatureContext:
    path = tmp_path / "t.parquet"
    pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col("ts").cast(pl.Int64)).write_parquet(path)
    trace = validate.validate(ingest.open_trace(path))
    requests = paths.request_paths(trace.layers)
    values, _ = metrics.compute(requests, trace.layers, trace.columns, metrics.observation_span(trace.layers))
    return features.FeatureContext.build(requests, trace.layers, trace.columns, values, window_s)


def sched(rid: str, event: str, t_s: float, **kw: object) -> dict:
    return {"ts": T0 + int(round(t_s * S)), "layer": "scheduler", "event": event, "request_id": rid, **kw}


def gpu_exec(rid: str, device: str, t_s: float, dur_ms: float, phase: str = "prefill") -> dict:
    return {"ts": T0 + int(round(t_s * S)), "layer": "gpu", "event": "exec", "request_id": rid, "device": device,
            "dur_ms": dur_ms, "phase": phase}


def queue_sample(queue: str, pool: str, t_s: float, depth: int) -> dict:
    return {"ts": T0 + int(round(t_s * S)), "layer": "queue", "event": "sample", "queue": queue, "pool": pool, "depth": depth}


def gpu_sample(device: str, t_s: float, **kw: object) -> dict:
    return {"ts": T0 + int(round(t_s * S)), "layer": "gpu", "event": "sample", "device": device, **kw}
