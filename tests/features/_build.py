"""Build a FeatureContext from hand-written rows (the same pipeline `analyze` runs)."""

from __future__ import annotations

from coherence_diag import features
from tests.features import _ctx

MS = 1_000_000
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def context(tmp_path, rows: list[dict]) -> features.FeatureContext:
    return _ctx.context(tmp_path, rows)


def compute(ctx: features.FeatureContext, *names: str) -> dict[str, float | None]:
    return features.compute(ctx, set(names)).values


def sched(rid: str, event: str, t_ms: float, **kw) -> dict:
    return {"ts": T0 + int(t_ms * MS), "layer": "scheduler", "event": event, "request_id": rid, **kw}


def exec_span(rid: str, device: str, t_ms: float, dur_ms: float, phase: str, **kw) -> dict:
    return {"ts": T0 + int(t_ms * MS), "layer": "gpu", "event": "exec", "request_id": rid, "device": device,
            "dur_ms": float(dur_ms), "phase": phase, **kw}


def device_info(device: str, host: str, pool: str, virtualized: bool = False) -> dict:
    return {"ts": T0, "layer": "gpu", "event": "device_info", "device": device, "host": host, "pool": pool,
            "accelerator": "A100-40GB", "virtualized": virtualized}
